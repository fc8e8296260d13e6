"""Upstream CosyVoice's inference calls, run so that they fail loudly, stop when asked and never hang.

Each upstream call (`inference_zero_shot(…)` and the others) is a generator; inside it upstream
starts a thread for the LLM, and that thread's exceptions never reach the caller: without streaming
they surface later as an unrelated flow error, with streaming the generator waits for tokens forever
(cli/model.py, `tts`). So here:

- `UpstreamGuard` wraps two methods of the loaded upstream model: `llm_job` (the LLM thread's body),
  to keep its exception and mark the request's tokens finished so upstream's loop ends; and
  `llm.inference` (the token generator), to count progress and to stop decoding when asked.
- `run_calls` runs the calls on a thread of its own into a small queue, and its consumer waits
  at most `stall_s` for progress (a token or some audio) before it gives up with an EngineError.

A consumer that goes away stops the LLM at its next token; the current call then ends at once
(upstream flushes the tokens it has), and no later call starts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from synth_worker.engines.errors import EngineError

log = logging.getLogger(__name__)

DEFAULT_STALL_S = 60.0  # COSYVOICE_STALL_S: the longest wait for one LLM token or one chunk of audio
_QUEUED_OUTPUTS = 4  # chunks of audio waiting for a slow consumer; upstream waits when it is full
_POLL_S = 0.25  # how often a waiting consumer looks at the progress clock


class Stopped(Exception):
    """Raised inside upstream's token generator when the consumer went away: the LLM stops there."""


class UpstreamGuard:
    """Installed once per loaded model: hears the LLM thread's failures, counts tokens, stops decoding.

    `model` is upstream's `CosyVoice3Model` (the `.model` of the `CosyVoice3` object). A model without
    those methods (a test's stand-in) is left alone, and only the consumer's clock guards it.
    """

    def __init__(self, model: Any) -> None:
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.last_progress_s = time.monotonic()
        self._lock = threading.Lock()
        llm = getattr(model, "llm", None)
        job, inference = getattr(model, "llm_job", None), getattr(llm, "inference", None)
        self.installed = callable(job) and callable(inference)
        if not self.installed:
            return
        end_flags = model.llm_end_dict  # upstream's per-request "the LLM has finished" flags

        def guarded_job(*args: Any, **kwargs: Any) -> None:
            try:
                job(*args, **kwargs)
            except BaseException as exc:  # kept for the consumer, whatever it is
                if not isinstance(exc, Stopped):
                    self._fail(exc)
                request_uuid = kwargs.get("uuid", args[-1] if args else None)
                end_flags[request_uuid] = True  # upstream's loop ends; join() returns at once

        def guarded_inference(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for token in inference(*args, **kwargs):
                if self.stop.is_set():
                    raise Stopped
                self.progress()
                yield token

        # Instance attributes, looked up by upstream at each call (`target=self.llm_job`).
        model.llm_job = guarded_job
        llm.inference = guarded_inference

    def progress(self) -> None:
        self.last_progress_s = time.monotonic()

    def start(self) -> None:
        """Before a request: nothing failed, nothing stopped, the clock starts now."""
        with self._lock:
            self.failure = None
        self.stop.clear()
        self.progress()

    def failure_error(self) -> EngineError | None:
        """The LLM thread's failure since `start`, as the EngineError to raise; None if it has none."""
        with self._lock:
            failure = self.failure
        if failure is None:
            return None
        error = EngineError(f"cosyvoice3's LLM failed: {type(failure).__name__}: {failure}")
        error.__cause__ = failure
        return error

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = exc


_DONE = object()


def run_calls(
    calls: Iterable[Callable[[], Iterable[Any]]],
    guard: UpstreamGuard,
    *,
    stall_s: float = DEFAULT_STALL_S,
    what: str = "cosyvoice3",
) -> Iterator[Any]:
    """The outputs of each call in turn, in order, while upstream works on its own thread.

    Raises EngineError when upstream fails (in the LLM thread too) or makes no progress for `stall_s`.
    Closing the iterator stops upstream and waits for its thread; the caller holds the model's lock
    for the iterator's whole life, so the next request never meets this one's state.
    """
    if stall_s <= 0:
        raise ValueError("stall_s must be positive")
    outputs: queue.Queue[Any] = queue.Queue(maxsize=_QUEUED_OUTPUTS)
    guard.start()

    def pump() -> None:
        try:
            for call in calls:
                if guard.stop.is_set():
                    return
                for output in call():
                    guard.progress()
                    # Once stopped, upstream's generator still runs to its end, which comes at once
                    # (the LLM stopped at its next token), so that upstream clears its request state.
                    if not guard.stop.is_set():
                        _put(outputs, output, guard.stop)
                if (failed := guard.failure_error()) is not None:
                    raise failed  # a failed LLM may still have let upstream yield a little audio
        except BaseException as exc:  # every failure goes to the consumer
            # The LLM thread's own error explains the flow error its missing tokens cause.
            _put(outputs, guard.failure_error() or exc, guard.stop)
        else:
            _put(outputs, _DONE, guard.stop)

    thread = threading.Thread(target=pump, name=f"{what}-calls", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = outputs.get(timeout=_POLL_S)
            except queue.Empty:
                stalled_s = time.monotonic() - guard.last_progress_s
                if stalled_s > stall_s:
                    raise EngineError(f"{what} made no progress for {stalled_s:.0f} s") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        guard.stop.set()
        _drain(outputs)  # a pump blocked on a full queue sees the stop and returns
        thread.join(stall_s)
        if thread.is_alive():
            log.error("%s: upstream's thread did not stop within %.0f s; it is left running", what, stall_s)


def _put(outputs: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item`, waiting while the queue is full; False (nothing put) once `stop` is set."""
    while not stop.is_set():
        try:
            outputs.put(item, timeout=_POLL_S)
        except queue.Full:
            continue
        return True
    return False


def _drain(outputs: queue.Queue[Any]) -> None:
    while True:
        try:
            outputs.get_nowait()
        except queue.Empty:
            return
