"""Speech engines behind one interface: `espeak` (CPU, development and CI) and `cosyvoice3` (GPU)."""

from synth_worker.engines.base import (
    DelayedEngine,
    Engine,
    EngineError,
    EngineInputError,
    EngineUnavailable,
    SynthesisRequest,
    load_engine,
)

__all__ = [
    "DelayedEngine",
    "Engine",
    "EngineError",
    "EngineInputError",
    "EngineUnavailable",
    "SynthesisRequest",
    "load_engine",
]
