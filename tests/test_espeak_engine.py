"""The CPU engine: espeak-ng through ctypes, and the request checks every engine relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.audio import CONTENT_TYPES, Pcm, decode_audio, encode_audio, rms_dbfs
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.errors import EngineInputError, EngineUnavailable
from synth_worker.engines.espeak import EspeakEngine, choose_voice, strip_markup
from synth_worker.engines.registry import load_engine

MANDARIN_SHORT = "今天天气很好。"
MANDARIN_LONG = "今天天气很好，我们一起去公园散步吧。公园里有很多花，还有一个很大的湖。"
CANTONESE = "我哋今日去饮茶好唔好？"
PROMPT = Pcm(np.zeros(16_000, np.float32), 16_000)


def request(text: str, **overrides: object) -> SynthesisRequest:
    fields: dict[str, object] = {
        "mode": "zero_shot",
        "prompt": PROMPT,
        "prompt_text": "你好",
        "speaker_key": "o_test.abc123",
    }
    fields.update(overrides)
    return SynthesisRequest(text=text, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    loaded = load_engine("espeak")
    assert isinstance(loaded, EspeakEngine)
    return loaded


def test_identity(engine: EspeakEngine) -> None:
    assert engine.name == "espeak"
    assert engine.version.startswith("espeak-ng-1.52")
    assert engine.profile_version == f"{engine.version}/knn-1"  # speaker profiles: test_speaker_adaptation
    assert engine.sample_rate_hz == 22_050


@pytest.mark.parametrize(
    ("short", "long", "preset"),
    [(MANDARIN_SHORT, MANDARIN_LONG, None), (CANTONESE, CANTONESE + "我好钟意食虾饺同烧卖。", "guangdong")],
)
def test_speech_is_audible_and_grows_with_the_text(
    engine: EspeakEngine, short: str, long: str, preset: str | None
) -> None:
    mode = "instruct" if preset else "zero_shot"
    short_pcm = engine.synthesize(request(short, mode=mode, instruct=preset))
    long_pcm = engine.synthesize(request(long, mode=mode, instruct=preset))

    for pcm in (short_pcm, long_pcm):
        assert pcm.sample_rate_hz == 22_050 and pcm.samples.dtype == np.float32
        assert np.abs(pcm.samples).max() <= 1.0
        assert rms_dbfs(pcm) > -30
    assert long_pcm.duration_s > 1.5 * short_pcm.duration_s
    assert short_pcm.duration_s > 0.1 * len(short)  # about 0.2 s a syllable at the default rate


def test_cantonese_preset_changes_the_voice(engine: EspeakEngine) -> None:
    mandarin = engine.synthesize(request(MANDARIN_SHORT))
    cantonese = engine.synthesize(request(MANDARIN_SHORT, mode="instruct", instruct="guangdong"))
    assert not np.array_equal(mandarin.samples, cantonese.samples)


def test_speed_2_is_shorter(engine: EspeakEngine) -> None:
    normal = engine.synthesize(request(MANDARIN_LONG))
    fast = engine.synthesize(request(MANDARIN_LONG, speed=2.0))
    assert fast.duration_s < 0.65 * normal.duration_s


def test_presets_shape_the_prosody(engine: EspeakEngine) -> None:
    def say(preset: str) -> Pcm:
        return engine.synthesize(request(MANDARIN_LONG, mode="instruct", instruct=preset))

    assert say("faster").duration_s < say("slower").duration_s
    assert rms_dbfs(say("louder")) > rms_dbfs(say("softer")) + 6


def test_same_request_gives_identical_samples(engine: EspeakEngine) -> None:
    """espeak-ng carries pitch-flutter state across calls; our steady voice variant removes it."""
    first = engine.synthesize(request(MANDARIN_LONG))
    engine.synthesize(request(CANTONESE, mode="instruct", instruct="guangdong"))
    engine.synthesize(request("Something else entirely, in English."))
    again = engine.synthesize(request(MANDARIN_LONG))
    assert np.array_equal(first.samples, again.samples)
    assert np.array_equal(first.samples, EspeakEngine().synthesize(request(MANDARIN_LONG)).samples)


@pytest.mark.parametrize(
    ("marked", "plain"),
    [
        ("她[h][ào]干净", "她干净"),
        ("[breath]今天天气[laughter]很好。", "今天天气很好。"),
        ("今天<strong>天气</strong>很好。", "今天天气很好。"),
    ],
)
def test_cosyvoice_markup_is_not_read_aloud(engine: EspeakEngine, marked: str, plain: str) -> None:
    assert strip_markup(marked) == plain
    marked_pcm, plain_pcm = engine.synthesize(request(marked)), engine.synthesize(request(plain))
    assert np.array_equal(marked_pcm.samples, plain_pcm.samples)


def test_strip_markup_keeps_ordinary_brackets_and_drops_controls() -> None:
    assert strip_markup("见注释[1]和[注]") == "见注释[1]和[注]"
    assert strip_markup("你好\x00\x01世界\n 再见") == "你好 世界 再见"


def test_voice_choice() -> None:
    assert choose_voice("今天天气很好", instruct=None, language=None) == "cmn"
    assert choose_voice("我喜欢Python编程", instruct=None, language=None) == "cmn"
    assert choose_voice("Hello there, my old friend 你好", instruct=None, language=None) == "en"
    assert choose_voice("今天天气很好", instruct="guangdong", language=None) == "yue"
    assert choose_voice("今天天气很好", instruct="sichuan", language=None) == "cmn"
    assert choose_voice("今天天气很好", instruct="guangdong", language="zh") == "yue"
    assert choose_voice("Bonjour", instruct=None, language="fr") == "fr"
    with pytest.raises(EngineInputError):
        choose_voice("hello", instruct=None, language="tlh")


def test_english_text_is_spoken(engine: EspeakEngine) -> None:
    pcm = engine.synthesize(request("Hello, this is the development voice of VoiceRelay."))
    assert pcm.duration_s > 1.5 and rms_dbfs(pcm) > -30


def test_output_encodes_and_decodes_in_every_format(engine: EspeakEngine) -> None:
    pcm = engine.synthesize(request(MANDARIN_LONG))
    for audio_format in CONTENT_TYPES:
        decoded = decode_audio(encode_audio(pcm, audio_format), max_duration_s=30)
        assert decoded.sample_rate_hz == 22_050
        assert decoded.duration_s == pytest.approx(pcm.duration_s, abs=0.05)


@pytest.mark.parametrize("text", ["[breath][laughter]", "<strong></strong>"])
def test_nothing_to_say_is_a_poison_input(engine: EspeakEngine, text: str) -> None:
    with pytest.raises(EngineInputError):
        engine.synthesize(request(text))


@pytest.mark.parametrize(
    "overrides",
    [
        {"text": "  "},
        {"mode": "voice_conversion"},
        {"mode": "instruct"},  # no preset
        {"instruct": "sichuan"},  # preset outside instruct mode
        {"mode": "instruct", "instruct": "请用四川话表达。<|endofprompt|>"},  # free text, not a preset id
        {"speed": 0.0},
        {"speed": math.nan},
        {"speaker_key": ""},
    ],
)
def test_malformed_requests_are_poison(overrides: dict[str, object]) -> None:
    text = str(overrides.pop("text", MANDARIN_SHORT))
    with pytest.raises(EngineInputError):
        request(text, **overrides)


def test_unknown_language_is_poison(engine: EspeakEngine) -> None:
    with pytest.raises(EngineInputError):
        engine.synthesize(request(MANDARIN_SHORT, language="klingon"))


@pytest.mark.parametrize("name", ["cosyvoice3", "festival"])
def test_unavailable_engines_say_so(name: str) -> None:
    with pytest.raises(EngineUnavailable, match=name):
        load_engine(name)


# --- streaming --------------------------------------------------------------------------------------------


def test_a_stream_comes_sentence_by_sentence_with_a_short_first_piece(engine: EspeakEngine) -> None:
    text = MANDARIN_LONG * 2
    pieces = list(engine.synthesize_stream(request(text)))
    assert len(pieces) >= 3
    assert all(p.sample_rate_hz == engine.sample_rate_hz and p.samples.size > 0 for p in pieces)
    whole = engine.synthesize(request(text))
    assert pieces[0].duration_s < whole.duration_s / 3  # one sentence: its audio comes first, early
    streamed_s = sum(p.duration_s for p in pieces)
    assert streamed_s == pytest.approx(whole.duration_s, rel=0.25)  # the same words, cut at pauses


def test_a_stream_is_deterministic_and_checks_its_request_first(engine: EspeakEngine) -> None:
    first = np.concatenate([p.samples for p in engine.synthesize_stream(request(MANDARIN_LONG))])
    again = np.concatenate([p.samples for p in engine.synthesize_stream(request(MANDARIN_LONG))])
    np.testing.assert_array_equal(first, again)
    with pytest.raises(EngineInputError):
        next(engine.synthesize_stream(request("[breath]")))


def test_a_stream_closed_early_leaves_the_engine_ready(engine: EspeakEngine) -> None:
    stream = engine.synthesize_stream(request(MANDARIN_LONG * 3))
    next(stream)
    stream.close()
    assert engine.synthesize(request(MANDARIN_SHORT)).samples.size > 0
