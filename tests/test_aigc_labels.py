"""China's AIGC labels in every output (《人工智能生成合成内容标识办法》, GB 45438-2025).

Unit: the Annex E JSON, the 短长短短 rhythm, the spoken label's rate (120–160 字/min), loudness
matching, the settings. On the real stack: every output format carries the implicit label, read back
by two readers (FFmpeg through PyAV, and mutagen / a RIFF walker), a `none` worker's output is shorter
by the label, and a cached repeat carries the original's labels.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import uuid

import mutagen
import mutagen.mp4
import numpy as np
import pytest
from stack import Stack, another_worker, queued_job
from test_worker_jobs import StandInMessage

from common.audio import CONTENT_TYPES, Pcm, decode_audio, read_metadata, rms_dbfs
from common.config import ConfigError, Settings
from events.records import TaskRecord, TaskStatus
from events.state import SharedState
from ops.samples import speech
from synth_worker import labels
from synth_worker.engines.base import SynthesisRequest
from synth_worker.jobs import JobRunner, render

ANNEX_E_KEYS = ["Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator",
                "PropagateID", "ReservedCode2"]  # fmt: skip


# --- the second reader: mutagen (and, for WAV's RIFF INFO, which mutagen does not read, a walker) -----


def _riff_info(data: bytes) -> dict[str, str]:
    """The RIFF INFO chunk's entries (four-letter id -> text), read without FFmpeg."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"

    def chunks(body: bytes, start: int) -> list[tuple[bytes, bytes]]:
        found, pos = [], start
        while pos + 8 <= len(body):
            chunk_id, (size,) = body[pos : pos + 4], struct.unpack("<I", body[pos + 4 : pos + 8])
            found.append((chunk_id, body[pos + 8 : pos + 8 + size]))
            pos += 8 + size + (size & 1)
        return found

    info: dict[str, str] = {}
    for chunk_id, body in chunks(data, 12):
        if chunk_id == b"LIST" and body[:4] == b"INFO":
            for key, value in chunks(body, 4):
                info[key.decode("ascii")] = value.rstrip(b"\0").decode("utf-8")
    return info


def _mp4_keyed_tags(data: bytes) -> dict[str, str]:
    """M4A's QuickTime metadata (`mdta` keys, which FFmpeg's use_metadata_tags writes) by name.

    mutagen parses the `ilst` values but names them by their index into the `keys` atom; the names
    come from that atom, which mutagen's atom parser finds.
    """
    tags = mutagen.mp4.MP4(io.BytesIO(data)).tags
    assert tags is not None
    atoms = mutagen.mp4.Atoms(io.BytesIO(data))
    keys_atom = next(atoms.path(*path)[-1] for path in
                     [(b"moov", b"udta", b"meta", b"keys"), (b"moov", b"meta", b"keys")]
                     if path in atoms)  # fmt: skip
    ok, payload = keys_atom.read(io.BytesIO(data))
    assert ok
    (count,) = struct.unpack(">I", payload[4:8])
    names, pos = {}, 8
    for index in range(1, count + 1):
        size, namespace = struct.unpack(">I4s", payload[pos : pos + 8])
        assert namespace == b"mdta"
        names[struct.pack(">I", index).decode("latin-1")] = payload[pos + 8 : pos + size].decode("utf-8")
        pos += size
    return {names[key]: str(values[0]) for key, values in tags.items() if key in names}


def aigc_by_mutagen(data: bytes, audio_format: str) -> str:
    """The `AIGC` field's value as a reader other than FFmpeg finds it."""
    if audio_format == "mp3":
        tags = mutagen.File(io.BytesIO(data)).tags
        return str(tags["TXXX:AIGC"].text[0])  # ID3v2 user text frame, description AIGC
    if audio_format == "aac":
        return _mp4_keyed_tags(data)["AIGC"]
    comment = _riff_info(data)["ICMT"]  # RIFF INFO has no free keys: the comment carries it
    [line] = [line for line in comment.splitlines() if line.startswith("AIGC=")]
    return line.removeprefix("AIGC=")


def aigc_by_pyav(data: bytes, audio_format: str) -> str:
    tags = read_metadata(data)
    if audio_format == "wav":
        [line] = [line for line in tags["comment"].splitlines() if line.startswith("AIGC=")]
        return line.removeprefix("AIGC=")
    return tags["AIGC"]


def assert_annex_e(value: str, *, producer: str, produce_id: str) -> None:
    label = json.loads(value)
    assert list(label) == ANNEX_E_KEYS
    assert all(isinstance(v, str) for v in label.values())
    assert (label["Label"], label["ContentProducer"], label["ProduceID"]) == ("1", producer, produce_id)
    assert all(label[k] == "" for k in ANNEX_E_KEYS[3:])


# --- unit: the labels ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_implicit_label_is_annex_e_json() -> None:
    value = labels.annex_e_label("示例科技", "t_01")
    assert value == (
        '{"Label":"1","ContentProducer":"示例科技","ProduceID":"t_01","ReservedCode1":"",'
        '"ContentPropagator":"","PropagateID":"","ReservedCode2":""}'
    )  # compact, and the producer's name as written (ensure_ascii=False)
    assert_annex_e(value, producer="示例科技", produce_id="t_01")
    tags = labels.implicit_metadata("示例科技", "t_01")
    assert tags["AIGC"] == value and "t_01" in tags["comment"]


def _runs(pcm: Pcm, frame_s: float = 0.005) -> list[tuple[bool, float]]:
    """(sounding, seconds) runs of the energy envelope, in 5 ms frames."""
    frame = round(pcm.sample_rate_hz * frame_s)
    usable = pcm.samples[: len(pcm.samples) // frame * frame].reshape(-1, frame)
    loud = np.sqrt(np.mean(np.square(usable), axis=1)) > 0.5 * float(np.max(np.abs(pcm.samples))) / 2
    runs: list[tuple[bool, float]] = []
    for value in loud:
        if runs and runs[-1][0] == bool(value):
            runs[-1] = (runs[-1][0], runs[-1][1] + frame_s)
        else:
            runs.append((bool(value), frame_s))
    return runs


@pytest.mark.unit
@pytest.mark.parametrize("rate_hz", [48_000, 22_050])
def test_the_rhythm_label_is_short_long_short_short(rate_hz: int) -> None:
    pcm = labels.rhythm_label(rate_hz)
    runs = _runs(pcm)
    while runs and not runs[0][0]:  # the first and last few ms of a fade in or out
        runs.pop(0)
    while runs and not runs[-1][0]:
        runs.pop()
    tones = [s for on, s in runs if on]
    gaps = [s for on, s in runs[1:-1] if not on]
    assert [on for on, _ in runs] == [True, False, True, False, True, False, True]
    assert tones == pytest.approx([0.12, 0.36, 0.12, 0.12], abs=0.02)  # 短长短短: Morse "AI"
    assert gaps == pytest.approx([0.12, 0.12, 0.12], abs=0.02)
    assert pcm.duration_s == pytest.approx(0.72 + 0.36, abs=0.01)
    # Faded in and out (no click), a 1 kHz tone.
    assert abs(pcm.samples[0]) < 0.01 and abs(pcm.samples[-1]) < 0.01
    spectrum = np.abs(np.fft.rfft(pcm.samples))
    assert np.fft.rfftfreq(len(pcm.samples), 1 / rate_hz)[np.argmax(spectrum)] == pytest.approx(1000, abs=5)


@pytest.mark.unit
def test_the_voice_label_is_spoken_at_120_to_160_characters_a_minute() -> None:
    pcm = labels.voice_label()
    # 10 characters: 3.75-5 s of speech (GB 45438-2025: 120-160 字/min).
    assert len(labels.VOICE_TEXT) == 10
    assert 3.75 <= labels.speech_span_s(pcm) <= 5.0
    assert 120 <= labels.rate_cpm(pcm) <= 160
    assert pcm.duration_s <= 5.1  # trimmed: the gap before it is ours to set
    assert labels.voice_label() is pcm  # rendered once per process


@pytest.mark.unit
@pytest.mark.parametrize("level", [0.3, 0.9])  # peaks: active RMS about -28 and -19 dBFS
@pytest.mark.parametrize("kind", ["voice", "rhythm"])
def test_the_label_matches_the_speech_in_loudness_and_rate(kind: str, level: float) -> None:
    raw = speech("今天天气很好，我们去公园散步吧。")
    said = Pcm((raw.samples / np.max(np.abs(raw.samples)) * level).astype(np.float32), raw.sample_rate_hz)
    label = labels.explicit_label(kind)
    assert label is not None
    matched = labels.match_loudness(label, said)
    assert matched.sample_rate_hz == said.sample_rate_hz
    assert labels.active_rms_dbfs(matched) == pytest.approx(labels.active_rms_dbfs(said), abs=0.5)
    assert float(np.max(np.abs(matched.samples))) < 1.0


@pytest.mark.unit
def test_a_label_after_near_silence_is_still_heard() -> None:
    quiet = Pcm(np.full(22_050, 1e-4, np.float32), 22_050)
    matched = labels.match_loudness(labels.rhythm_label(), quiet)
    assert labels.active_rms_dbfs(matched) == pytest.approx(-30.0, abs=0.5)


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["voice", "rhythm"])
def test_the_label_follows_the_speech_after_a_pause(kind: str) -> None:
    said = speech("你好")
    labelled = labels.with_explicit_label(said, kind)
    label = labels.explicit_label(kind)
    assert label is not None
    label_s = labels.match_loudness(label, said).duration_s
    assert labelled.duration_s == pytest.approx(said.duration_s + labels.GAP_S + label_s, abs=1e-3)
    assert np.array_equal(labelled.samples[: len(said.samples)], said.samples)  # the speech first, untouched
    gap = labelled.samples[len(said.samples) : len(said.samples) + round(labels.GAP_S * said.sample_rate_hz)]
    assert not gap.any()
    first = labels.with_explicit_label(said, kind, placement="start")
    assert np.array_equal(first.samples[-len(said.samples) :], said.samples)
    assert labels.with_explicit_label(said, "none") is said


class _PlainEngine:
    name, version, sample_rate_hz = "plain", "1", 22_050

    def synthesize(self, request):
        return speech(request.text)


@pytest.mark.unit
@pytest.mark.parametrize("audio_format", sorted(CONTENT_TYPES))
@pytest.mark.parametrize("kind", ["voice", "rhythm", "none"])
def test_render_labels_every_format_for_both_readers(audio_format: str, kind: str) -> None:
    request = SynthesisRequest(
        text="你好，世界", mode="zero_shot", prompt=Pcm(np.zeros(16_000, np.float32), 16_000),
        prompt_text="", speaker_key="k",
    )  # fmt: skip
    said = _PlainEngine().synthesize(request)
    rendered = render(said, 0.1, audio_format, "t_unit", aigc_label=kind, aigc_producer="示例")
    for reader in (aigc_by_pyav, aigc_by_mutagen):
        assert_annex_e(reader(rendered.audio, audio_format), producer="示例", produce_id="t_unit")
    speech_s = speech("你好，世界").duration_s
    assert rendered.speech.duration_s == pytest.approx(speech_s)  # similarity is measured on this
    assert rendered.aigc_label == kind
    decoded = decode_audio(rendered.audio)
    assert decoded.duration_s == pytest.approx(rendered.duration_s, abs=0.06)  # duration_s: the file's
    if kind == "none":
        assert rendered.duration_s == pytest.approx(speech_s)
    else:
        assert rendered.duration_s > speech_s + labels.GAP_S + 1.0


@pytest.mark.unit
def test_the_settings() -> None:
    assert Settings.from_env({}).aigc_explicit_label == "voice"
    assert Settings.from_env({}).aigc_producer == "VoiceRelay"
    assert Settings.from_env({"AIGC_EXPLICIT_LABEL": "none"}).aigc_explicit_label == "none"
    with pytest.raises(ConfigError, match="AIGC_EXPLICIT_LABEL must be one of voice, rhythm, none"):
        Settings.from_env({"AIGC_EXPLICIT_LABEL": "beep"})
    with pytest.raises(ConfigError, match="AIGC_PRODUCER must be at most 64"):
        Settings.from_env({"AIGC_PRODUCER": "x" * 65})
    assert Settings.from_env({"AIGC_PRODUCER": "  "}).aigc_producer == "VoiceRelay"  # never empty


# --- on the real stack ----------------------------------------------------------------------------------


def fresh_text() -> str:
    return f"第{uuid.uuid4().hex[:6]}句，带有人工智能标识。"


async def test_every_output_format_carries_both_labels(stack: Stack) -> None:
    client = await stack.user()
    voice_id = (await stack.ready_voice(client))["voice_id"]
    text = fresh_text()
    for audio_format in ("mp3", "aac", "wav"):
        reply = await client.synthesize(text, voice_id, format=audio_format)
        assert reply.status == 202, reply.body
        task = await client.wait_task(reply.body["task_id"], timeout_s=60)
        assert task["status"] == "succeeded", task
        assert task["aigc_label"] == "voice"
        audio = await client.request("GET", task["audio_url"])
        assert audio.status == 200
        for reader in (aigc_by_pyav, aigc_by_mutagen):
            value = reader(audio.body, audio_format)
            assert_annex_e(value, producer=stack.settings.aigc_producer, produce_id=task["task_id"])
        # duration_s is the stored file's: the speech, the pause and the spoken label.
        decoded = decode_audio(audio.body)
        assert decoded.duration_s == pytest.approx(task["duration_s"], abs=0.06)
        label_s = labels.voice_label().duration_s
        tail = Pcm(decoded.samples[-round(label_s * decoded.sample_rate_hz) :], decoded.sample_rate_hz)
        assert rms_dbfs(tail) > -40  # the label is there to hear at the end

    # The identical request again: answered from the result cache, with the original's labels.
    original = task
    cached = await client.synthesize(text, voice_id, format="wav")
    assert (cached.status, cached.body["status"]) == (200, "succeeded"), cached.body
    assert cached.body["aigc_label"] == original["aigc_label"] == "voice"
    copy = await client.request("GET", cached.body["audio_url"])
    assert copy.body == audio.body  # the very file: the ProduceID names the task that made it
    assert_annex_e(aigc_by_mutagen(copy.body, "wav"), producer="VoiceRelay", produce_id=original["task_id"])


async def run_job(stack: Stack, runner: JobRunner, owner: str, voice_id: str, text: str) -> TaskRecord:
    state = SharedState(stack.bus)
    task, event = await queued_job(
        state, owner, voice_id, text=text, audio_format="wav", trace_id="tr_labels"
    )
    message = StandInMessage(num_delivered=1)
    await runner(event, message)
    assert message.calls[-1] == "ack", message.calls
    done = await state.tasks.get(owner, task.task_id)
    assert done is not None and done.status == TaskStatus.SUCCEEDED
    return done


async def test_a_worker_without_the_audible_label_is_shorter_by_it(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    client = await stack.user()
    voice_id = (await stack.ready_voice(client))["voice_id"]
    owner, text = client.openid or "", fresh_text()
    reply = await client.synthesize(text, voice_id, format="wav")
    labelled = await client.wait_task(reply.body["task_id"], timeout_s=60)
    labelled_audio = (await client.request("GET", labelled["audio_url"])).body

    with caplog.at_level(logging.WARNING, logger="synth_worker.worker"):
        async with another_worker(stack, aigc_explicit_label="none", aigc_producer="另一家") as runner:
            plain = await run_job(stack, runner, owner, voice_id, text)
    assert any("AIGC_EXPLICIT_LABEL=none" in r.getMessage() for r in caplog.records)  # Art. 9: said aloud
    assert plain.aigc_label == "none"
    assert plain.audio_key is not None
    plain_audio = await stack.store.get(plain.audio_key)
    # Still the implicit label, with this worker's producer.
    assert_annex_e(aigc_by_mutagen(plain_audio, "wav"), producer="另一家", produce_id=plain.task_id)

    shorter_by = decode_audio(labelled_audio).duration_s - decode_audio(plain_audio).duration_s
    assert shorter_by == pytest.approx(labels.GAP_S + labels.voice_label().duration_s, abs=0.05)
    assert labelled["duration_s"] - plain.duration_s == pytest.approx(shorter_by, abs=0.01)
    # The speech itself is the same: the labelled file starts with exactly the unlabelled one.
    plain_pcm, labelled_pcm = decode_audio(plain_audio), decode_audio(labelled_audio)
    assert np.allclose(labelled_pcm.samples[: len(plain_pcm.samples)], plain_pcm.samples, atol=1e-4)
