"""COSYVOICE_STALL_S and COSYVOICE_VLLM reach CosyVoice3Engine.load from the worker's registry, and
`ops doctor` says whether vLLM is on. (`ops gpu-smoke`'s own load is checked in tests/test_gpu_smoke.py.)"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import test_cosyvoice3

from common.config import Settings
from synth_worker.engines.cosyvoice3 import CosyVoice3Engine
from synth_worker.engines.cosyvoice_calls import DEFAULT_STALL_S
from synth_worker.engines.errors import EngineUnavailable
from synth_worker.engines.registry import EngineOptions, load_engine, probe_engine

# The loading fixtures of tests/test_cosyvoice3.py (a complete, empty model directory; a stand-in upstream).
model_dir = test_cosyvoice3.model_dir
fake_upstream = test_cosyvoice3.fake_upstream


def test_engine_options_take_every_cosyvoice_setting() -> None:
    settings = dataclasses.replace(
        Settings(),
        cosyvoice_model_dir="/models/m",
        cosyvoice_text_frontend="none",
        cosyvoice_wetext_dir="/opt/wetext",
        cosyvoice_stall_s=12.5,
        cosyvoice_vllm=True,
    )
    assert EngineOptions.from_settings(settings) == EngineOptions(
        model_dir="/models/m", text_frontend="none", wetext_dir="/opt/wetext", stall_s=12.5, vllm=True
    )
    assert EngineOptions.from_settings(Settings()) == EngineOptions()
    assert EngineOptions().stall_s == DEFAULT_STALL_S and EngineOptions().vllm is False


def test_the_registry_loads_with_the_stall_time_and_without_vllm(
    model_dir: Path, fake_upstream: list
) -> None:
    engine = load_engine("cosyvoice3", EngineOptions(str(model_dir), "none", stall_s=4.0))
    assert isinstance(engine, CosyVoice3Engine)
    assert engine._stall_s == 4.0  # what run_calls is given for every request
    [(args, kwargs)] = fake_upstream
    assert args == (str(model_dir),) and kwargs["load_vllm"] is False


def test_the_registry_loads_with_vllm_from_a_writable_stand_in(
    model_dir: Path, fake_upstream: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "vllm" else None)
    load_engine("cosyvoice3", EngineOptions(str(model_dir), "none", vllm=True))
    [(args, kwargs)] = fake_upstream
    assert kwargs["load_vllm"] is True
    stand_in = Path(args[0])
    assert stand_in != model_dir and (stand_in / "vllm").is_dir()  # upstream exports the LLM there
    assert (stand_in / "llm.pt").resolve() == (model_dir / "llm.pt").resolve()


def test_vllm_without_the_package_does_not_load_and_says_why(model_dir: Path, fake_upstream: list) -> None:
    with pytest.raises(EngineUnavailable, match="needs the vllm package"):
        load_engine("cosyvoice3", EngineOptions(str(model_dir), "none", vllm=True))
    assert fake_upstream == []


def test_the_doctor_probe_says_whether_vllm_is_on(model_dir: Path, fake_upstream: list) -> None:
    assert "vLLM off" in probe_engine("cosyvoice3", EngineOptions(str(model_dir), "none"))
    assert "vLLM on" in probe_engine("cosyvoice3", EngineOptions(str(model_dir), "none", vllm=True))
    assert fake_upstream == []  # nothing was loaded
