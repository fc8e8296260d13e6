"""The CosyVoice3 adapter without weights or GPU: prompt strings, presets, chunking, the speaker
cache, model-directory checks and the lazy upstream import.

The upstream model is replaced by `FakeCosyVoice3`, a small class with the same methods that records
every call and returns audio that says which call made it, so the tests check our adapter's logic
(what it passes upstream, in what order, and what it does with the result), not the model.
"""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.audio import Pcm, decode_audio
from common.presets import PRESETS
from synth_worker.engines import cosyvoice3
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.cosyvoice3 import MODEL_FILES, CosyVoice3Engine, missing_model_files
from synth_worker.engines.cosyvoice_prompts import (
    cross_lingual_tts_text,
    instruct_text,
    strip_special_tokens,
    zero_shot_prompt_text,
)
from synth_worker.engines.errors import EngineError, EngineInputError, EngineUnavailable
from synth_worker.engines.registry import EngineOptions, load_engine, probe_engine
from synth_worker.engines.text_chunks import chunk_weight, split_text

PREFIX = "You are a helpful assistant.<|endofprompt|>"
TRANSCRIPT = "希望你以后能够做的比我还好呦。"
TEXT = "今天天气真好，能陪我出去逛逛吗？"


# --- a stand-in for upstream's CosyVoice3 -------------------------------------------------------------


class FakeTensor:
    """What upstream yields: a (1, N) float tensor, possibly on the GPU."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values.reshape(1, -1)

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._values


@dataclass
class Call:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    prompt_wav_rate_hz: int | None = None  # read while the call runs: the file must exist then
    prompt_duration_s: float | None = None


@dataclass
class FakeCosyVoice3:
    """Records calls; call number k yields two chunks of samples equal to k / 1000."""

    sample_rate: int = 24_000
    calls: list[Call] = field(default_factory=list)
    frontend: types.SimpleNamespace = field(default_factory=lambda: types.SimpleNamespace(spk2info={}))
    fail_with: Exception | None = None
    model: types.SimpleNamespace | None = None  # upstream's CosyVoice3Model, where a test needs one

    def add_zero_shot_spk(self, prompt_text: str, prompt_wav: str, zero_shot_spk_id: str) -> bool:
        self._record("add_zero_shot_spk", (prompt_text, prompt_wav, zero_shot_spk_id), {}, prompt_wav)
        self.frontend.spk2info[zero_shot_spk_id] = {"prompt_text": prompt_text}
        return True

    def inference_zero_shot(
        self, tts_text: str, prompt_text: str, prompt_wav: str, **kwargs: Any
    ) -> Iterator:
        return self._speak("inference_zero_shot", (tts_text, prompt_text, prompt_wav), kwargs, prompt_wav)

    def inference_cross_lingual(self, tts_text: str, prompt_wav: str, **kwargs: Any) -> Iterator:
        return self._speak("inference_cross_lingual", (tts_text, prompt_wav), kwargs, prompt_wav)

    def inference_instruct2(
        self, tts_text: str, instruct_text: str, prompt_wav: str, **kwargs: Any
    ) -> Iterator:
        return self._speak("inference_instruct2", (tts_text, instruct_text, prompt_wav), kwargs, prompt_wav)

    def inference_calls(self) -> list[Call]:
        return [c for c in self.calls if c.method.startswith("inference_")]

    def registrations(self) -> list[Call]:
        return [c for c in self.calls if c.method == "add_zero_shot_spk"]

    def _record(self, method: str, args: tuple, kwargs: dict, prompt_wav: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        prompt = decode_audio(Path(prompt_wav).read_bytes()) if prompt_wav else None
        if prompt is None:
            self.calls.append(Call(method, args, kwargs))
        else:
            self.calls.append(Call(method, args, kwargs, prompt.sample_rate_hz, prompt.duration_s))

    def _speak(self, method: str, args: tuple, kwargs: dict, prompt_wav: str) -> Iterator[dict[str, Any]]:
        self._record(method, args, kwargs, prompt_wav)  # before the first yield, as upstream's frontend
        value = len(self.calls) / 1000
        pieces = 3 if kwargs.get("stream") else 2
        if kwargs.get("stream") and self.model is not None:
            self.model.first_hops.append(self.model.token_hop_len)
            self.model.token_hop_len *= 2  # as upstream: grown within a request, never reset
        return iter([{"tts_speech": FakeTensor(np.full(100, value, np.float32))} for _ in range(pieces)])


def voice(seed: int, *, seconds: float = 3.0, rate_hz: int = 16_000) -> Pcm:
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate_hz)).astype(np.float32)
    return Pcm(samples, rate_hz)


def request(text: str = TEXT, **overrides: Any) -> SynthesisRequest:
    fields: dict[str, Any] = {
        "mode": "zero_shot",
        "prompt": voice(1),
        "prompt_text": TRANSCRIPT,
        "speaker_key": "o_alice.sha1",
    }
    fields.update(overrides)
    return SynthesisRequest(text=text, **fields)


@pytest.fixture
def model() -> FakeCosyVoice3:
    return FakeCosyVoice3()


@pytest.fixture
def engine(model: FakeCosyVoice3) -> CosyVoice3Engine:
    return CosyVoice3Engine(model)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A directory with every file the loader looks for (empty: nothing reads them here)."""
    for name in MODEL_FILES:
        path = tmp_path / name.rstrip("/")
        path.mkdir() if name.endswith("/") else path.write_bytes(b"")
    return tmp_path


# --- prompt strings -----------------------------------------------------------------------------------


def test_prompt_strings_match_the_documented_v3_formats() -> None:
    assert zero_shot_prompt_text(TRANSCRIPT) == f"You are a helpful assistant.<|endofprompt|>{TRANSCRIPT}"
    assert cross_lingual_tts_text("[breath]因为他们那一辈人[breath]在乡里面住的要习惯一点。") == (
        "You are a helpful assistant.<|endofprompt|>[breath]因为他们那一辈人[breath]在乡里面住的要习惯一点。"
    )
    assert instruct_text("sichuan") == "You are a helpful assistant. 请用四川话表达。<|endofprompt|>"
    assert instruct_text("guangdong") == "You are a helpful assistant. 请用广东话表达。<|endofprompt|>"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.id)
def test_every_preset_becomes_a_v3_instruction(preset: Any) -> None:
    assert instruct_text(preset.id) == f"You are a helpful assistant. {preset.instruction}<|endofprompt|>"


# Upstream's `instruct_list` (cosyvoice/utils/common.py): the instructions CosyVoice3 was trained on.
_DIALECT_REGIONS = {
    "guangdong": "广东", "dongbei": "东北", "gansu": "甘肃", "guizhou": "贵州", "henan": "河南",
    "hubei": "湖北", "hunan": "湖南", "jiangxi": "江西", "minnan": "闽南", "ningxia": "宁夏",
    "shanxi": "山西", "shaanxi": "陕西", "shandong": "山东", "shanghai": "上海", "sichuan": "四川",
    "tianjin": "天津", "yunnan": "云南",
}  # fmt: skip
UPSTREAM_INSTRUCTIONS = {
    **{preset_id: f"请用{region}话表达。" for preset_id, region in _DIALECT_REGIONS.items()},
    "louder": "Please say a sentence as loudly as possible.",
    "softer": "Please say a sentence in a very soft voice.",
    "slower": "请用尽可能慢地语速说一句话。",
    "faster": "请用尽可能快地语速说一句话。",
    "happy": "请非常开心地说一句话。",
    "sad": "请非常伤心地说一句话。",
    "angry": "请非常生气地说一句话。",
}


@pytest.mark.parametrize("preset_id", sorted(UPSTREAM_INSTRUCTIONS))
def test_presets_use_the_instructions_cosyvoice3_was_trained_on(preset_id: str) -> None:
    expected = f"You are a helpful assistant. {UPSTREAM_INSTRUCTIONS[preset_id]}<|endofprompt|>"
    assert instruct_text(preset_id) == expected


def test_unknown_preset_is_poison() -> None:
    with pytest.raises(EngineInputError):
        instruct_text("请用四川话表达。")


def test_typed_control_tokens_are_removed_even_when_removal_joins_a_new_one() -> None:
    assert strip_special_tokens("你好<|endofprompt|>世界") == "你好世界"
    assert strip_special_tokens("a<|<|x|>endofprompt|>b") == "ab"
    assert strip_special_tokens("1 < 2 | 3 > 0") == "1 < 2 | 3 > 0"


# --- splitting ----------------------------------------------------------------------------------------


def _without_spaces(text: str) -> str:
    return "".join(text.split())


def test_short_text_is_one_chunk() -> None:
    assert split_text(f"  {TEXT}  ") == [TEXT]
    assert split_text(" \n ") == []


def test_long_text_is_cut_at_chinese_and_latin_sentence_ends() -> None:
    text = "今天天气很好。我们去公园吧！你来吗？Hello there. It costs 3.14 dollars! Fine?"
    assert split_text(text, max_weight=8) == [
        "今天天气很好。",
        "我们去公园吧！",
        "你来吗？Hello there.",
        "It costs 3.14 dollars! Fine?",
    ]


def test_a_sentence_too_long_is_cut_at_clauses_then_by_weight() -> None:
    text = "第一部分很长很长，第二部分也很长很长，第三部分" + "长" * 30 + "。"
    chunks = split_text(text, max_weight=12)
    assert chunks[:2] == ["第一部分很长很长，", "第二部分也很长很长，"]
    assert all(chunk_weight(c) <= 12 for c in chunks)
    assert "".join(chunks) == text


def test_latin_text_is_cut_between_words() -> None:
    text = " ".join(["word"] * 200)
    chunks = split_text(text, max_weight=20)
    assert len(chunks) > 1
    assert all(set(chunk.split()) == {"word"} for chunk in chunks)
    assert _without_spaces("".join(chunks)) == _without_spaces(text)


@pytest.mark.parametrize(
    "markup", ["她[h][ào]", "<strong>非常。重要！真的</strong>", "[breath]", "[laughter]"]
)
def test_cuts_never_fall_inside_markup(markup: str) -> None:
    text = ("前面的话。" + markup + "后面。") * 6
    for max_weight in (1, 2, 3, 5, 8, 13):
        chunks = split_text(text, max_weight=max_weight)
        assert "".join(chunks) == text
        assert sum(chunk.count(markup) for chunk in chunks) == 6


def test_chunks_keep_to_the_weight() -> None:
    text = "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐。" * 8
    chunks = split_text(text)
    assert len(chunks) > 1
    assert all(chunk_weight(c) <= 80 for c in chunks)
    assert "".join(chunks) == text


# --- the engine -------------------------------------------------------------------------------------------


def test_zero_shot_registers_the_voice_with_the_prefix_and_synthesises_by_its_id(
    engine: CosyVoice3Engine, model: FakeCosyVoice3
) -> None:
    engine.synthesize(request())

    [registration] = model.registrations()
    prompt_text, prompt_wav, speaker_id = registration.args
    assert prompt_text == PREFIX + TRANSCRIPT
    assert registration.prompt_wav_rate_hz == 16_000
    assert not Path(prompt_wav).exists()  # the temporary prompt file is gone afterwards
    [call] = model.inference_calls()
    assert call.method == "inference_zero_shot"
    assert call.args == (TEXT, "", "")
    assert call.kwargs == {"zero_shot_spk_id": speaker_id, "stream": False, "speed": 1.0}


def test_a_voice_is_registered_once_and_reused(engine: CosyVoice3Engine, model: FakeCosyVoice3) -> None:
    for _ in range(3):
        engine.synthesize(request())
    assert len(model.registrations()) == 1
    ids = {call.kwargs["zero_shot_spk_id"] for call in model.inference_calls()}
    assert len(ids) == 1 and len(model.inference_calls()) == 3
    assert list(model.frontend.spk2info) == list(ids)
    assert all(call.prompt_wav_rate_hz is None for call in model.inference_calls())  # no prompt written


def test_same_transcript_different_audio_or_owner_never_shares_a_voice(
    engine: CosyVoice3Engine, model: FakeCosyVoice3
) -> None:
    engine.synthesize(request(prompt=voice(1), speaker_key="o_alice.aaa"))
    engine.synthesize(request(prompt=voice(2), speaker_key="o_bob.bbb"))
    engine.synthesize(request(prompt=voice(1), speaker_key="o_carol.aaa"))  # same audio, other owner
    ids = [call.kwargs["zero_shot_spk_id"] for call in model.inference_calls()]
    assert len(set(ids)) == 3
    assert len(model.registrations()) == 3
    assert {c.args[0] for c in model.registrations()} == {PREFIX + TRANSCRIPT}


def test_cross_lingual_puts_the_prefix_on_the_text_and_shares_the_zero_shot_speaker(
    engine: CosyVoice3Engine, model: FakeCosyVoice3
) -> None:
    engine.synthesize(request())
    engine.synthesize(request("Hello, this is my voice.", mode="cross_lingual", language="en"))
    [registration] = model.registrations()
    zero_shot, cross_lingual = model.inference_calls()
    assert cross_lingual.method == "inference_cross_lingual"
    assert cross_lingual.args == (PREFIX + "Hello, this is my voice.", "")
    speaker_id = registration.args[2]
    assert cross_lingual.kwargs == {"zero_shot_spk_id": speaker_id, "stream": False, "speed": 1.0}
    assert zero_shot.kwargs["zero_shot_spk_id"] == speaker_id


def test_instruct_registers_the_voice_once_per_preset_with_the_instruction(
    engine: CosyVoice3Engine, model: FakeCosyVoice3
) -> None:
    engine.synthesize(request())  # the zero-shot registration, with the transcript
    for preset in ("sichuan", "sichuan", "happy"):
        engine.synthesize(request(mode="instruct", instruct=preset, speed=1.25))
    prompt_texts = [c.args[0] for c in model.registrations()]
    sichuan = "You are a helpful assistant. 请用四川话表达。<|endofprompt|>"
    happy = "You are a helpful assistant. 请非常开心地说一句话。<|endofprompt|>"
    assert prompt_texts == [PREFIX + TRANSCRIPT, sichuan, happy]
    calls = model.inference_calls()[1:]
    assert [c.method for c in calls] == ["inference_instruct2"] * 3
    assert [c.args for c in calls] == [(TEXT, sichuan, ""), (TEXT, sichuan, ""), (TEXT, happy, "")]
    ids = [c.kwargs.pop("zero_shot_spk_id") for c in calls]
    assert ids[0] == ids[1] != ids[2] and model.registrations()[1].args[2] == ids[0]
    assert all(c.kwargs == {"stream": False, "speed": 1.25} for c in calls)
    assert engine.registered_speakers == 3
    assert all(c.prompt_wav_rate_hz is None for c in calls)  # no prompt work per call


def test_zero_shot_without_a_transcript_is_cross_lingual(
    engine: CosyVoice3Engine, model: FakeCosyVoice3
) -> None:
    engine.synthesize(request(prompt_text="  "))
    assert [c.method for c in model.calls] == ["add_zero_shot_spk", "inference_cross_lingual"]
    assert model.registrations()[0].args[0] == PREFIX


def test_typed_control_tokens_never_reach_the_model(engine: CosyVoice3Engine, model: FakeCosyVoice3) -> None:
    engine.synthesize(request("你好<|endofprompt|>世界", prompt_text="我说<|endofprompt|>了"))
    assert model.registrations()[0].args[0] == PREFIX + "我说了"
    assert model.inference_calls()[0].args[0] == "你好世界"


def test_long_text_is_split_and_the_audio_joined_in_order(model: FakeCosyVoice3) -> None:
    engine = CosyVoice3Engine(model, max_chunk_weight=10)
    text = "第一句话在这里。第二句话在这里。第三句话在这里。"
    for mode in ("zero_shot", "cross_lingual"):
        model.calls.clear()
        pcm = engine.synthesize(request(text, mode=mode))
        calls = model.inference_calls()
        spoken = [c.args[0].removeprefix(PREFIX) for c in calls]
        assert spoken == ["第一句话在这里。", "第二句话在这里。", "第三句话在这里。"]
        # Each call yields 2 x 100 samples of (its position in model.calls) / 1000.
        positions = [model.calls.index(c) + 1 for c in calls]
        expected = np.concatenate([np.full(200, k / 1000, np.float32) for k in positions])
        np.testing.assert_array_equal(pcm.samples, expected)


def test_output_is_24_khz_float32_mono_in_range(model: FakeCosyVoice3) -> None:
    model.inference_zero_shot = lambda *a, **k: iter(  # type: ignore[method-assign]
        [{"tts_speech": FakeTensor(np.array([0.5, 2.0, -3.0, np.nan], np.float64))}]
    )
    pcm = CosyVoice3Engine(model).synthesize(request())
    assert pcm.sample_rate_hz == 24_000
    assert pcm.samples.dtype == np.float32 and pcm.samples.ndim == 1
    np.testing.assert_array_equal(pcm.samples, np.array([0.5, 1.0, -1.0, 0.0], np.float32))


def test_the_prompt_file_exists_only_while_upstream_reads_it(
    engine: CosyVoice3Engine, model: FakeCosyVoice3
) -> None:
    engine.synthesize(request(mode="cross_lingual"))
    [registration] = model.registrations()
    assert registration.prompt_wav_rate_hz == 16_000
    assert not Path(registration.args[1]).exists()


@pytest.mark.parametrize(
    ("upload_hz", "upstream_hz"), [(48_000, 24_000), (24_000, 24_000), (22_050, 22_050), (8_000, 16_000)]
)
def test_upstream_reads_the_prompt_at_24_khz_or_its_own_rate_and_at_most_30_s(
    upload_hz: int, upstream_hz: int
) -> None:
    model = FakeCosyVoice3()
    prompt = voice(4, seconds=31.0, rate_hz=upload_hz)
    CosyVoice3Engine(model).synthesize(request(mode="cross_lingual", prompt=prompt))
    [registration] = model.registrations()
    assert registration.prompt_wav_rate_hz == upstream_hz
    assert registration.prompt_duration_s == pytest.approx(30.0, abs=0.01)


def test_empty_prompt_is_poison(engine: CosyVoice3Engine) -> None:
    with pytest.raises(EngineInputError):
        engine.synthesize(request(prompt=Pcm(np.zeros(0, np.float32), 16_000)))


def test_upstream_failures_are_engine_errors_and_leave_no_half_registered_voice(
    engine: CosyVoice3Engine, model: FakeCosyVoice3
) -> None:
    model.fail_with = RuntimeError("CUDA out of memory")
    with pytest.raises(EngineError, match="CUDA out of memory") as raised:
        engine.synthesize(request())
    assert not isinstance(raised.value, EngineInputError)  # retried, not failed for good
    assert engine.registered_speakers == 0 and model.frontend.spk2info == {}
    model.fail_with = None
    engine.synthesize(request())
    assert len(model.registrations()) == 1


def test_the_speaker_cache_is_bounded_and_evicts_upstream_too(model: FakeCosyVoice3) -> None:
    engine = CosyVoice3Engine(model, max_speakers=2)
    for seed in (1, 2, 3):
        engine.synthesize(request(prompt=voice(seed), speaker_key=f"o_user.{seed}"))
    assert engine.registered_speakers == 2
    assert len(model.frontend.spk2info) == 2
    engine.synthesize(request(prompt=voice(1), speaker_key="o_user.1"))  # the oldest was evicted
    assert len(model.registrations()) == 4


def test_a_deleted_voice_is_forgotten(engine: CosyVoice3Engine, model: FakeCosyVoice3) -> None:
    engine.synthesize(request(speaker_key="o_alice.aaa"))
    engine.synthesize(request(speaker_key="o_alice.aaa", prompt_text="另一段文字。"))
    engine.synthesize(request(speaker_key="o_bob.bbb", prompt=voice(2)))
    assert engine.forget_speaker("o_alice.aaa") == 2
    assert engine.registered_speakers == 1 and len(model.frontend.spk2info) == 1
    assert engine.forget_speaker("o_alice.aaa") == 0


# --- loading ------------------------------------------------------------------------------------------


def test_no_model_dir_is_unavailable() -> None:
    with pytest.raises(EngineUnavailable, match="COSYVOICE_MODEL_DIR"):
        CosyVoice3Engine.load(None)
    with pytest.raises(EngineUnavailable, match="cosyvoice3"):
        load_engine("cosyvoice3")


def test_a_missing_model_dir_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="not a directory"):
        CosyVoice3Engine.load(str(tmp_path / "absent"))


def test_an_incomplete_model_dir_names_what_is_missing(model_dir: Path) -> None:
    (model_dir / "flow.pt").unlink()
    (model_dir / "CosyVoice-BlankEN").rmdir()
    (model_dir / "CosyVoice-BlankEN").write_bytes(b"")  # a file where a directory belongs
    assert missing_model_files(model_dir) == ["flow.pt", "CosyVoice-BlankEN/"]
    with pytest.raises(EngineUnavailable) as raised:
        load_engine("cosyvoice3", EngineOptions(model_dir=str(model_dir), text_frontend="none"))
    assert "flow.pt, CosyVoice-BlankEN/" in str(raised.value)
    assert "llm.pt" not in str(raised.value)


def test_missing_upstream_code_is_unavailable_and_says_how_to_fix_it(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cosyvoice", None)  # makes the import fail, whatever is installed
    with pytest.raises(EngineUnavailable) as raised:
        CosyVoice3Engine.load(str(model_dir))
    assert "PYTHONPATH" in str(raised.value) and "Matcha-TTS" in str(raised.value)


@pytest.fixture
def fake_upstream(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple, dict]]:
    """`cosyvoice.cli.cosyvoice.CosyVoice3` as a module of ours; returns its constructor calls."""
    constructed: list[tuple[tuple, dict]] = []

    def construct(*args: Any, **kwargs: Any) -> FakeCosyVoice3:
        constructed.append((args, kwargs))
        if "broken" in args[0]:
            raise AssertionError("do not use broken for CosyVoice3 initialization!")
        return FakeCosyVoice3()

    for name in ("cosyvoice", "cosyvoice.cli"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    upstream = types.ModuleType("cosyvoice.cli.cosyvoice")
    upstream.CosyVoice3 = construct  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cosyvoice.cli.cosyvoice", upstream)
    monkeypatch.setattr(cosyvoice3, "_cuda_available", lambda: True)
    return constructed


def test_load_builds_the_model_once_without_trt_vllm_or_fp16(
    model_dir: Path, fake_upstream: list[tuple[tuple, dict]]
) -> None:
    engine = load_engine("cosyvoice3", EngineOptions(model_dir=str(model_dir), text_frontend="none"))
    assert isinstance(engine, CosyVoice3Engine)
    assert fake_upstream == [((str(model_dir),), {"load_trt": False, "load_vllm": False, "fp16": False})]
    assert engine.name == "cosyvoice3" and engine.version == f"cosyvoice3-{model_dir.name}"
    assert engine.sample_rate_hz == 24_000


def test_a_model_that_fails_to_load_is_unavailable(
    tmp_path: Path, fake_upstream: list[tuple[tuple, dict]]
) -> None:
    broken = tmp_path / "broken"
    for name in MODEL_FILES:
        path = broken / name.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if name.endswith("/") else path.write_bytes(b"")
    with pytest.raises(EngineUnavailable, match=r"loading .* failed"):
        CosyVoice3Engine.load(str(broken), text_frontend="none")


def test_importing_the_engine_imports_neither_torch_nor_upstream() -> None:
    code = (
        "import sys, synth_worker.engines.cosyvoice3, ops.gpu_smoke\n"
        "loaded = {'torch', 'cosyvoice', 'matcha'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent, timeout=60)


def test_doctor_probe_checks_the_model_dir_without_loading(tmp_path: Path) -> None:
    """`ops doctor` must not load 0.5 B parameters onto a GPU to say whether the engine could start."""
    with pytest.raises(EngineUnavailable, match=r"llm\.pt"):
        probe_engine("cosyvoice3", EngineOptions(model_dir=str(tmp_path), text_frontend="none"))


# --- text normalisation: wetext from local files, or a load that says why not ----------------------------


@pytest.fixture
def fake_wetext(monkeypatch: pytest.MonkeyPatch, fake_upstream: list) -> list[str]:
    """A `wetext` module whose download answers what our engine tells it, and an upstream constructor
    that, like upstream's frontend, asks it and falls back to no normalisation when it raises.
    Returns the directories wetext was pointed at."""
    asked: list[str] = []

    def snapshot_download(repo: str) -> str:
        raise AssertionError("the real download must never be reached")

    module = types.ModuleType("wetext.wetext")
    module.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wetext", types.ModuleType("wetext"))
    monkeypatch.setitem(sys.modules, "wetext.wetext", module)
    upstream = sys.modules["cosyvoice.cli.cosyvoice"]
    construct = upstream.CosyVoice3  # type: ignore[attr-defined]

    def construct_with_frontend(*args: Any, **kwargs: Any) -> FakeCosyVoice3:
        model = construct(*args, **kwargs)
        try:
            asked.append(module.snapshot_download("pengzhendong/wetext"))  # type: ignore[attr-defined]
            model.frontend.text_frontend = "wetext"
        except Exception:  # upstream's bare except
            model.frontend.text_frontend = ""
        return model

    upstream.CosyVoice3 = construct_with_frontend  # type: ignore[attr-defined]
    return asked


def wetext_files(directory: Path) -> Path:
    for name in cosyvoice3.WETEXT_FILES:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"fst")
    return directory


def test_wetext_reads_its_files_from_the_configured_dir(
    model_dir: Path, tmp_path: Path, fake_wetext: list
) -> None:
    wetext_dir = wetext_files(tmp_path / "wetext")
    engine = CosyVoice3Engine.load(str(model_dir), text_frontend="wetext", wetext_dir=str(wetext_dir))
    assert engine.text_frontend == "wetext" and fake_wetext == [str(wetext_dir)]
    assert sys.modules["wetext.wetext"].snapshot_download.__name__ == "snapshot_download"  # restored


@pytest.mark.parametrize("wetext_dir", [None, "absent", "incomplete"])
def test_wetext_without_its_files_does_not_load(
    model_dir: Path, tmp_path: Path, fake_wetext: list, wetext_dir: str | None
) -> None:
    if wetext_dir == "incomplete":
        wetext_files(tmp_path / "incomplete")
        (tmp_path / "incomplete" / "en/tn/verbalizer.fst").unlink()
    directory = None if wetext_dir is None else str(tmp_path / wetext_dir)
    with pytest.raises(EngineUnavailable) as raised:
        CosyVoice3Engine.load(str(model_dir), text_frontend="wetext", wetext_dir=directory)
    message = str(raised.value)
    assert "COSYVOICE_WETEXT_DIR" in message and "COSYVOICE_TEXT_FRONTEND=none" in message
    assert "fetch_wetext.py" in message
    if wetext_dir == "incomplete":
        assert "en/tn/verbalizer.fst" in message and "zh/tn/tagger.fst" not in message
    assert fake_wetext == []


def test_none_loads_without_normalisation_and_never_asks_for_files(
    model_dir: Path, fake_wetext: list, caplog: pytest.LogCaptureFixture
) -> None:
    engine = CosyVoice3Engine.load(str(model_dir), text_frontend="none")
    assert engine.text_frontend == "" and fake_wetext == []
    assert "COSYVOICE_TEXT_FRONTEND=none" in caplog.text


def test_a_frontend_upstream_did_not_take_up_fails_the_load(model_dir: Path, fake_wetext: list) -> None:
    with pytest.raises(EngineUnavailable, match="upstream's text frontend is none"):
        CosyVoice3Engine.load(str(model_dir), text_frontend="ttsfrd")


def test_the_doctor_probe_names_the_text_frontend(
    model_dir: Path, tmp_path: Path, fake_upstream: list
) -> None:
    wetext_dir = wetext_files(tmp_path / "wetext")
    described = probe_engine("cosyvoice3", EngineOptions(str(model_dir), "wetext", str(wetext_dir)))
    assert f"text frontend wetext, FST files in {wetext_dir}" in described
    with pytest.raises(EngineUnavailable, match="COSYVOICE_WETEXT_DIR"):
        probe_engine("cosyvoice3", EngineOptions(str(model_dir), "wetext", None))
