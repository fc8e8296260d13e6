"""The job's file encoded while the engine speaks (synth_worker/output_file.py, common.audio.mux_mp3).

What matters is that the shortcut changes nothing a listener or a player can tell: an MP3 made of the
speech encoded piece by piece and a label tail encoded once decodes to exactly the samples the stream
sends (same length, the label where the tail says), as cleanly as a file encoded in one go; players
read its length from the Info tag; the pieces stay in order whatever the executor.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import mutagen.mp3
import numpy as np
import pytest

from common.audio import Pcm, decode_audio, encode_audio, encode_mp3_run, mux_mp3, rms_dbfs
from ops.samples import speech
from synth_worker import labels, output_file
from synth_worker.output_file import FileEncoding, OutputFile

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pieces() -> list[Pcm]:
    return [speech("第一句。"), speech("今天天气很好，我们一起去公园散步吧。"), speech("再见。")]


def joined(pieces: list[Pcm]) -> Pcm:
    return Pcm(np.concatenate([p.samples for p in pieces]), pieces[0].sample_rate_hz)


def as_it_comes(pieces: list[Pcm], audio_format: str = "mp3", kind: str = "voice"):
    output = OutputFile(audio_format, kind, task_id="t_unit", producer="VoiceRelay")
    for piece in pieces:
        output.add(piece)
        output.encode_pending()
    return output.finish(joined(pieces))


def rms_error(decoded: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(decoded - reference, dtype=np.float64))))


def test_an_mp3_made_as_the_speech_comes_decodes_to_the_speech_and_the_streamed_tail(
    pieces: list[Pcm],
) -> None:
    speech_pcm = joined(pieces)
    made = as_it_comes(pieces)
    assert made.tail is not None
    expected = np.concatenate([speech_pcm.samples, made.tail.samples])
    decoded = decode_audio(made.audio)
    # Sample for sample as long as what the stream sends: the LAME tag drops the priming and the
    # padding at the file's ends, and the join's own silence is in the streamed tail's pause.
    assert decoded.sample_rate_hz == speech_pcm.sample_rate_hz
    assert decoded.samples.size == expected.size
    assert made.duration_s == pytest.approx(expected.size / speech_pcm.sample_rate_hz)
    # As close to it as one encoding of the whole.
    whole = decode_audio(encode_audio(Pcm(expected, speech_pcm.sample_rate_hz), "mp3")).samples
    assert rms_error(decoded.samples, expected) <= 1.05 * rms_error(whole, expected)
    # The pause: GAP_S and at most one frame of the join's padding, silent in the file; then the
    # label where the tail puts it.
    pause_n = made.tail.samples.size - labels.explicit_label("voice").samples.size
    gap_n = round(labels.GAP_S * speech_pcm.sample_rate_hz)
    assert gap_n <= pause_n <= gap_n + 576
    start = speech_pcm.samples.size
    assert np.max(np.abs(decoded.samples[start + 600 : start + pause_n - 600])) < 2e-3
    label_part = decoded.samples[start + pause_n :]
    assert rms_dbfs(Pcm(label_part, speech_pcm.sample_rate_hz)) > -40


def test_players_read_its_length_and_its_aigc_tag(pieces: list[Pcm]) -> None:
    made = as_it_comes(pieces)
    info = mutagen.mp3.MP3(io.BytesIO(made.audio))
    # mutagen counts the frames the Info tag declares (it does not drop priming and padding).
    assert info.info.length == pytest.approx(made.duration_s, abs=0.1)
    assert json.loads(str(info.tags["TXXX:AIGC"].text[0]))["ProduceID"] == "t_unit"
    assert decode_audio(made.audio).duration_s == pytest.approx(made.duration_s)


def test_pieces_or_the_whole_speech_make_the_same_file(pieces: list[Pcm]) -> None:
    whole = OutputFile("mp3", "voice", task_id="t_unit", producer="VoiceRelay").finish(joined(pieces))
    assert as_it_comes(pieces).audio == whole.audio


def test_without_an_audible_label_the_file_is_the_speech(pieces: list[Pcm]) -> None:
    made = as_it_comes(pieces, kind="none")
    assert made.tail is None
    assert decode_audio(made.audio).samples.size == joined(pieces).samples.size


@pytest.mark.parametrize("audio_format", ["wav", "aac"])
def test_wav_and_aac_are_encoded_whole_with_the_exact_pause(pieces: list[Pcm], audio_format: str) -> None:
    made = as_it_comes(pieces, audio_format)
    assert made.tail is not None
    rate_hz = pieces[0].sample_rate_hz
    label_n = labels.explicit_label("voice").samples.size
    assert made.tail.samples.size == round(labels.GAP_S * rate_hz) + label_n


def test_a_label_tail_is_encoded_once_per_loudness_step(
    pieces: list[Pcm], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_file, "TAILS_KEPT", 2)
    monkeypatch.setattr(output_file, "_TAILS", OrderedDict())
    label = labels.explicit_label("voice")
    quiet = joined(pieces)  # at -6 dB (about -24 dBFS), where the label follows the speech's loudness
    speech_pcm = Pcm(quiet.samples * np.float32(0.5), quiet.sample_rate_hz)
    step = labels.label_gain_db(label, speech_pcm)
    first = output_file.encoded_tail("voice", label, step)
    assert output_file.encoded_tail("voice", label, step) is first  # kept
    louder = [output_file.encoded_tail("voice", label, step + n * labels.GAIN_STEP_DB) for n in (1, 2)]
    assert all(run is not first for run in louder)
    assert len(output_file._TAILS) == 2  # the least recently used went
    assert output_file.encoded_tail("voice", label, step) is not first  # encoded again


def test_the_gain_is_a_whole_step_and_never_clips(pieces: list[Pcm]) -> None:
    label = labels.explicit_label("voice")
    for level in (0.01, 0.3, 1.0, 3.0):
        loud = Pcm(np.clip(joined(pieces).samples * np.float32(level), -1, 1), pieces[0].sample_rate_hz)
        gain_db = labels.label_gain_db(label, loud)
        assert gain_db / labels.GAIN_STEP_DB == pytest.approx(round(gain_db / labels.GAIN_STEP_DB))
        assert np.max(np.abs(labels.scaled(label, gain_db).samples)) <= 10 ** (-1 / 20) + 1e-6


def test_pieces_that_are_not_the_speech_are_refused(pieces: list[Pcm]) -> None:
    output = OutputFile("mp3", "voice", task_id="t_unit", producer="VoiceRelay")
    output.add(pieces[0])
    with pytest.raises(ValueError, match="samples encoded"):
        output.finish(joined(pieces))


def test_runs_of_different_rates_do_not_mix() -> None:
    a = encode_mp3_run(Pcm(np.zeros(2205, np.float32), 22_050))
    b = encode_mp3_run(Pcm(np.zeros(2400, np.float32), 24_000))
    with pytest.raises(ValueError, match="share a sample rate"):
        mux_mp3([a, b])
    with pytest.raises(ValueError, match="without frames"):
        mux_mp3([])


async def test_any_executor_keeps_the_pieces_in_order(pieces: list[Pcm]) -> None:
    many = [Pcm(part, pieces[0].sample_rate_hz) for part in np.array_split(joined(pieces).samples, 40)]
    output = OutputFile("mp3", "voice", task_id="t_unit", producer="VoiceRelay")
    with ThreadPoolExecutor(4) as executor:
        async with FileEncoding(output, executor) as file:
            for piece in many:
                file.add(piece)
                await asyncio.sleep(0)
            made = await file.finish(joined(pieces))
    assert made.audio == as_it_comes(pieces).audio


async def test_leaving_a_failed_job_waits_for_its_encoding(pieces: list[Pcm]) -> None:
    output = OutputFile("mp3", "voice", task_id="t_unit", producer="VoiceRelay")
    with ThreadPoolExecutor(1) as executor:
        with pytest.raises(RuntimeError, match="engine failed"):
            async with FileEncoding(output, executor) as file:
                file.add(pieces[1])
                raise RuntimeError("engine failed")
        running = file._running
    assert running and all(f.done() for f in running)


def test_speech_at_a_rate_mp3_lacks_is_resampled_whole() -> None:
    tone = Pcm((0.2 * np.sin(np.arange(96_000) * 0.05)).astype(np.float32), 96_000)
    made = as_it_comes([tone])
    assert decode_audio(made.audio).sample_rate_hz == 48_000
    assert decode_audio(made.audio).duration_s == pytest.approx(made.duration_s, abs=0.06)
