"""The one place engines are chosen by name: `load_engine` for the worker, `probe_engine` for `ops doctor`.

The only module that names the engine modules, and it imports them inside the functions, when one is
asked for: a CPU worker never imports torch, and no engine module imports the registry, so there is no
import cycle between them.
"""

from __future__ import annotations

from collections.abc import Callable

from common.vocabulary import COSYVOICE3, ENGINE_NAMES, ESPEAK
from synth_worker.engines.base import Engine
from synth_worker.engines.errors import EngineUnavailable


def _load_espeak(model_dir: str | None) -> Engine:
    # model_dir is not used: espeak's data ships in its wheel.
    try:
        from synth_worker.engines.espeak import EspeakEngine
    except ImportError as exc:
        raise EngineUnavailable(f"espeak engine cannot be imported: {exc}") from exc
    return EspeakEngine()


def _load_cosyvoice3(model_dir: str | None) -> Engine:
    # Imports torch and the upstream CosyVoice code only when loading.
    from synth_worker.engines.cosyvoice3 import CosyVoice3Engine

    return CosyVoice3Engine.load(model_dir)


def _probe_cosyvoice3(model_dir: str | None) -> str:
    # The model files and the upstream code, without loading a model onto a GPU.
    from synth_worker.engines.cosyvoice3 import check_model_dir, import_upstream

    directory = check_model_dir(model_dir)
    import_upstream()
    return f"cosyvoice3: model files complete in {directory}, CosyVoice code importable (not loaded)"


# Engine name -> its loader; every name in common.vocabulary.ENGINE_NAMES has one.
_LOADERS: dict[str, Callable[[str | None], Engine]] = {
    ESPEAK: _load_espeak,
    COSYVOICE3: _load_cosyvoice3,
}
# Engines whose check for `ops doctor` is lighter than loading them; the others are loaded.
_PROBES: dict[str, Callable[[str | None], str]] = {
    COSYVOICE3: _probe_cosyvoice3,
}
assert set(_LOADERS) == set(ENGINE_NAMES), "every engine name needs a loader"


def load_engine(name: str, *, model_dir: str | None = None) -> Engine:
    """Start the named engine (slow: run it in the engine's executor, once per process).

    Raises EngineUnavailable with a message fit for the operator.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise EngineUnavailable(f"unknown engine {name!r}; expected one of {list(ENGINE_NAMES)}")
    return loader(model_dir)


def probe_engine(name: str, *, model_dir: str | None = None) -> str:
    """Whether the named engine could start, without loading a model onto a GPU (for `ops doctor`).

    Returns a one-line description; raises EngineUnavailable as load_engine would.
    """
    probe = _PROBES.get(name)
    if probe is not None:
        return probe(model_dir)
    engine = load_engine(name, model_dir=model_dir)
    return f"{engine.name} {engine.version}, {engine.sample_rate_hz} Hz"
