"""The one place engines are chosen by name: `load_engine` for the worker, `probe_engine` for `ops doctor`.

The only module that names the engine modules, and it imports them inside the functions, when one is
asked for: a CPU worker never imports torch, and no engine module imports the registry, so there is no
import cycle between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.config import Settings
from common.vocabulary import COSYVOICE3, COSYVOICE_TEXT_FRONTENDS, ENGINE_NAMES, ESPEAK
from synth_worker.engines.base import Engine
from synth_worker.engines.cosyvoice_calls import DEFAULT_STALL_S
from synth_worker.engines.errors import EngineUnavailable


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """What engines take from the settings; espeak needs none of it."""

    model_dir: str | None = None  # COSYVOICE_MODEL_DIR
    text_frontend: str = COSYVOICE_TEXT_FRONTENDS[0]  # COSYVOICE_TEXT_FRONTEND
    wetext_dir: str | None = None  # COSYVOICE_WETEXT_DIR
    stall_s: float = DEFAULT_STALL_S  # COSYVOICE_STALL_S
    vllm: bool = False  # COSYVOICE_VLLM

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineOptions:
        return cls(
            model_dir=settings.cosyvoice_model_dir,
            text_frontend=settings.cosyvoice_text_frontend,
            wetext_dir=settings.cosyvoice_wetext_dir,
            stall_s=settings.cosyvoice_stall_s,
            vllm=settings.cosyvoice_vllm,
        )


def _load_espeak(options: EngineOptions) -> Engine:
    # No option is used: espeak's data ships in its wheel.
    try:
        from synth_worker.engines.espeak import EspeakEngine
    except ImportError as exc:
        raise EngineUnavailable(f"espeak engine cannot be imported: {exc}") from exc
    return EspeakEngine()


def _load_cosyvoice3(options: EngineOptions) -> Engine:
    # Imports torch and the upstream CosyVoice code only when loading.
    from synth_worker.engines.cosyvoice3 import CosyVoice3Engine

    return CosyVoice3Engine.load(
        options.model_dir,
        text_frontend=options.text_frontend,
        wetext_dir=options.wetext_dir,
        stall_s=options.stall_s,
        vllm=options.vllm,
    )


def _probe_cosyvoice3(options: EngineOptions) -> str:
    # The model files, the text frontend's files and the upstream code, without loading a model.
    from synth_worker.engines.cosyvoice3 import check_model_dir, check_wetext_dir, import_upstream

    directory = check_model_dir(options.model_dir)
    if options.text_frontend == "wetext":
        frontend = f"text frontend wetext, FST files in {check_wetext_dir(options.wetext_dir)}"
    elif options.text_frontend == "none":
        frontend = "text frontend none (normalisation off)"
    else:
        frontend = "text frontend ttsfrd (checked at load)"
    import_upstream()
    # vLLM itself is imported by upstream only when loading: here the setting is only reported.
    vllm = "vLLM on" if options.vllm else "vLLM off"
    return (
        f"cosyvoice3: model files complete in {directory}, {frontend}, {vllm}, "
        "CosyVoice code importable (not loaded)"
    )


# Engine name -> its loader; every name in common.vocabulary.ENGINE_NAMES has one.
_LOADERS: dict[str, Callable[[EngineOptions], Engine]] = {
    ESPEAK: _load_espeak,
    COSYVOICE3: _load_cosyvoice3,
}
# Engines whose check for `ops doctor` is lighter than loading them; the others are loaded.
_PROBES: dict[str, Callable[[EngineOptions], str]] = {
    COSYVOICE3: _probe_cosyvoice3,
}
assert set(_LOADERS) == set(ENGINE_NAMES), "every engine name needs a loader"


def load_engine(name: str, options: EngineOptions | None = None) -> Engine:
    """Start the named engine (slow: run it in the engine's executor, once per process).

    Raises EngineUnavailable with a message fit for the operator.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise EngineUnavailable(f"unknown engine {name!r}; expected one of {list(ENGINE_NAMES)}")
    return loader(options or EngineOptions())


def probe_engine(name: str, options: EngineOptions | None = None) -> str:
    """Whether the named engine could start, without loading a model onto a GPU (for `ops doctor`).

    Returns a one-line description; raises EngineUnavailable as load_engine would.
    """
    probe = _PROBES.get(name)
    if probe is not None:
        return probe(options or EngineOptions())
    engine = load_engine(name, options)
    return f"{engine.name} {engine.version}, {engine.sample_rate_hz} Hz"
