"""The GPU engine: Fun-CosyVoice3-0.5B through the official CosyVoice code (docs/COSYVOICE3.md).

The upstream code is not a package: a pinned checkout and its `third_party/Matcha-TTS` go on
PYTHONPATH, and are imported only in `CosyVoice3Engine.load`, so everything else runs without them.
The model is loaded once per process and called one request at a time: upstream keeps per-request
state on the model object.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.audio import Pcm, encode_audio, resample
from common.owners import owned_key
from common.vocabulary import COSYVOICE3, COSYVOICE_TEXT_FRONTENDS, CROSS_LINGUAL, INSTRUCT, ZERO_SHOT
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.cosyvoice_calls import DEFAULT_STALL_S, UpstreamGuard, run_calls
from synth_worker.engines.cosyvoice_prompts import (
    cross_lingual_tts_text,
    instruct_text,
    strip_special_tokens,
    zero_shot_prompt_text,
)
from synth_worker.engines.errors import EngineError, EngineInputError, EngineUnavailable
from synth_worker.engines.text_chunks import MAX_CHUNK_WEIGHT, split_text, stream_chunks

log = logging.getLogger(__name__)

# What CosyVoice3(model_dir) reads; a trailing "/" marks a directory.
MODEL_FILES = (
    "cosyvoice3.yaml",
    "llm.pt",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v3.onnx",
    "CosyVoice-BlankEN/",
)
# The flow takes its prompt features at 24 kHz (upstream resamples prompt_wav itself, and asserts at
# least 16 kHz): a prompt is handed over at 24 kHz, or at its own rate between 16 and 24 kHz.
PROMPT_RATE_HZ = 24_000
MIN_PROMPT_RATE_HZ = 16_000
MAX_PROMPT_S = 30.0  # upstream's speech tokenizer asserts that prompts are no longer
DEFAULT_MAX_SPEAKERS = 256  # registered voices kept on the GPU; each holds the prompt's features
_SPEAKER_ID_PREFIX = "voicerelay:"  # never collides with speakers shipped in a model's spk2info.pt


def missing_model_files(model_dir: Path) -> list[str]:
    """The entries of MODEL_FILES that `model_dir` lacks (all of them when it does not exist)."""
    missing = []
    for name in MODEL_FILES:
        path = model_dir / name.rstrip("/")
        if not (path.is_dir() if name.endswith("/") else path.is_file()):
            missing.append(name)
    return missing


def check_model_dir(model_dir: str | None) -> Path:
    """The model directory, or EngineUnavailable naming what is missing.

    Checked before upstream sees it: CosyVoice3 downloads from ModelScope when its path does not
    exist, and weights must never be fetched by a worker: they are downloaded once, at deploy time.
    """
    if not model_dir:
        raise EngineUnavailable(
            "cosyvoice3 needs COSYVOICE_MODEL_DIR: the Fun-CosyVoice3-0.5B model directory, "
            "downloaded from ModelScope or Hugging Face at deploy time"
        )
    directory = Path(model_dir)
    if not directory.is_dir():
        raise EngineUnavailable(f"cosyvoice3: COSYVOICE_MODEL_DIR {directory} is not a directory")
    missing = missing_model_files(directory)
    if missing:
        raise EngineUnavailable(
            f"cosyvoice3: model directory {directory} is incomplete, missing {', '.join(missing)}"
        )
    return directory


# The FST files upstream's `wetext.Normalizer(remove_erhua=False)` reads (Chinese and English text
# normalisation), as wetext lays them out; ops/docker/fetch_wetext.py writes them.
WETEXT_FILES = ("zh/tn/tagger.fst", "zh/tn/verbalizer.fst", "en/tn/tagger.fst", "en/tn/verbalizer.fst")
_FIX_FRONTEND = (
    "the GPU image ships the files (COSYVOICE_WETEXT_DIR=/opt/wetext); elsewhere write them with "
    "`python ops/docker/fetch_wetext.py DIR`, or set COSYVOICE_TEXT_FRONTEND=none to synthesise "
    "without normalisation (numbers, dates and units are then read as written)"
)


def check_wetext_dir(wetext_dir: str | None) -> Path:
    """The wetext FST directory, or EngineUnavailable naming what is missing and how to fix it."""
    if not wetext_dir:
        raise EngineUnavailable(
            f"cosyvoice3: COSYVOICE_TEXT_FRONTEND=wetext needs COSYVOICE_WETEXT_DIR; {_FIX_FRONTEND}"
        )
    directory = Path(wetext_dir)
    missing = [name for name in WETEXT_FILES if not (directory / name).is_file()]
    if missing:
        raise EngineUnavailable(
            f"cosyvoice3: COSYVOICE_WETEXT_DIR {directory} lacks {', '.join(missing)}; {_FIX_FRONTEND}"
        )
    return directory


@contextlib.contextmanager
def _offline_text_frontend(text_frontend: str, wetext_dir: str | None) -> Iterator[None]:
    """While upstream loads: wetext finds its FST files in `wetext_dir` and never downloads them.

    Upstream's frontend makes `wetext.Normalizer()`, which fetches its files from ModelScope at every
    load; offline, a bare `except` then turns normalisation off without a word. Here the fetch is
    answered with the local directory (`wetext`) or refused at once (`ttsfrd`, `none`).
    """
    try:
        import wetext.wetext as wetext_module  # type: ignore[import-not-found]
    except ImportError as exc:
        if text_frontend == "wetext":
            raise EngineUnavailable(
                f"cosyvoice3: wetext cannot be imported ({exc}); {_FIX_FRONTEND}"
            ) from exc
        yield
        return
    if text_frontend == "wetext":
        directory = str(check_wetext_dir(wetext_dir))

        def fetch(*_args: object, **_kwargs: object) -> str:
            return directory
    else:

        def fetch(*_args: object, **_kwargs: object) -> str:
            raise RuntimeError(f"COSYVOICE_TEXT_FRONTEND={text_frontend}: wetext is not used")

    original = wetext_module.snapshot_download
    wetext_module.snapshot_download = fetch
    try:
        yield
    finally:
        wetext_module.snapshot_download = original


def _settle_text_frontend(model: Any, text_frontend: str) -> str:
    """Check upstream's frontend is the one asked for; returns it ("" for none)."""
    frontend = getattr(model, "frontend", None)
    active = str(getattr(frontend, "text_frontend", ""))
    if text_frontend == "none":
        if frontend is not None:
            frontend.text_frontend = ""  # upstream skips normalisation for this value
        log.warning(
            "COSYVOICE_TEXT_FRONTEND=none: text normalisation is off, numbers, dates and units are read "
            "as written"
        )
        return ""
    if active != text_frontend:
        raise EngineUnavailable(
            f"cosyvoice3: COSYVOICE_TEXT_FRONTEND={text_frontend}, but upstream's text frontend is "
            f"{active or 'none'} (its load log says why); {_FIX_FRONTEND}"
        )
    return active


def import_upstream() -> Callable[..., Any]:
    try:
        from cosyvoice.cli.cosyvoice import CosyVoice3  # type: ignore[import-not-found]
    except ImportError as exc:  # the checkout, Matcha-TTS (module "matcha") or one of their deps
        raise EngineUnavailable(
            f"cosyvoice3: the CosyVoice code cannot be imported ({exc}); put a CosyVoice checkout and "
            "its third_party/Matcha-TTS on PYTHONPATH and install its requirements "
            "(ops/docker/gpu.Dockerfile does both)"
        ) from exc
    return CosyVoice3


class _SpeakerRegistry:
    """Speakers registered with upstream's `add_zero_shot_spk`, at most `capacity`, least recent out.

    A registration is a voice with a prompt text: zero-shot's transcript, or an instruct preset's
    instruction. Its id covers the request's speaker_key (owner + sample hash) and a digest of the
    very audio and prompt text that were registered, so two users reading the same script never share
    a voice, and a changed sample or transcript is registered afresh. Each registration also notes the
    voices (request.voice_key) that used it, so deleting any of them drops it.
    """

    def __init__(self, model: Any, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._model = model
        self._capacity = capacity
        self._ids: OrderedDict[str, str] = OrderedDict()  # speaker id -> speaker_key
        self._voices: dict[str, set[str]] = {}  # speaker id -> the voice keys that used it

    def __len__(self) -> int:
        return len(self._ids)

    @staticmethod
    def speaker_id(speaker_key: str, prompt: Pcm, prompt_text: str) -> str:
        digest = hashlib.sha256()
        for part in (speaker_key.encode(), prompt_text.encode(), str(prompt.sample_rate_hz).encode()):
            digest.update(len(part).to_bytes(8, "big") + part)
        digest.update(np.ascontiguousarray(prompt.samples).tobytes())
        return f"{_SPEAKER_ID_PREFIX}{digest.hexdigest()[:32]}"

    def ensure(
        self,
        speaker_key: str,
        prompt: Pcm,
        prompt_text: str,
        prompt_wav: Callable[[], str],
        voice_key: str | None = None,
    ) -> str:
        """The speaker id of the voice with `prompt_text` (upstream's, prefix included), registering
        it first (from the file `prompt_wav()`) if need be."""
        speaker_id = self.speaker_id(speaker_key, prompt, prompt_text)
        if speaker_id in self._ids:
            self._ids.move_to_end(speaker_id)
            self._note_voice(speaker_id, voice_key)
            return speaker_id
        try:
            self._model.add_zero_shot_spk(prompt_text, prompt_wav(), speaker_id)
        except Exception:
            self._drop_upstream(speaker_id)  # no half-registered voice left behind
            raise
        self._ids[speaker_id] = speaker_key
        self._note_voice(speaker_id, voice_key)
        while len(self._ids) > self._capacity:
            oldest, _ = self._ids.popitem(last=False)
            self._drop_upstream(oldest)
        return speaker_id

    def forget(self, speaker_key: str) -> int:
        """Drop every registration of `speaker_key` (the voice was deleted); how many there were."""
        return self._drop([speaker_id for speaker_id, key in self._ids.items() if key == speaker_key])

    def forget_voice(self, voice_key: str) -> int:
        """Drop every registration a request of `voice_key` used; how many there were."""
        return self._drop([speaker_id for speaker_id, keys in self._voices.items() if voice_key in keys])

    def _note_voice(self, speaker_id: str, voice_key: str | None) -> None:
        if voice_key is not None:
            self._voices.setdefault(speaker_id, set()).add(voice_key)

    def _drop(self, speaker_ids: list[str]) -> int:
        for speaker_id in speaker_ids:
            del self._ids[speaker_id]
            self._drop_upstream(speaker_id)
        return len(speaker_ids)

    def _drop_upstream(self, speaker_id: str) -> None:
        self._voices.pop(speaker_id, None)  # our note of the voices that used it goes with it
        # add_zero_shot_spk stores into frontend.spk2info and upstream never removes from it.
        speakers = getattr(getattr(self._model, "frontend", None), "spk2info", None)
        if isinstance(speakers, dict):
            speakers.pop(speaker_id, None)


class CosyVoice3Engine:
    """Engine "cosyvoice3": Pcm float32 at the model's rate (24 kHz), any of the three modes, whole or
    as a stream.

    `model` is an upstream CosyVoice3 object (or anything with its methods, in tests); `load` makes
    the real one. Every mode registers its speaker once and reuses it (`_SpeakerRegistry`): zero-shot
    and cross-lingual with the transcript, instruct once per preset with the instruction as its
    prompt text (a speaker registered with the transcript would make instruct2 drop the instruction).
    """

    name = COSYVOICE3

    def __init__(
        self,
        model: Any,
        *,
        version: str = COSYVOICE3,
        max_speakers: int = DEFAULT_MAX_SPEAKERS,
        max_chunk_weight: float = MAX_CHUNK_WEIGHT,
        text_frontend: str = "",
        stall_s: float = DEFAULT_STALL_S,
    ) -> None:
        """`text_frontend`: the text normalisation upstream applies ("" for none), for `ops doctor`.
        `stall_s`: COSYVOICE_STALL_S, how long upstream may go without progress before it has failed."""
        if not stall_s > 0:
            raise ValueError("stall_s must be positive")
        self._model = model
        self.version = version
        self.text_frontend = text_frontend
        self.sample_rate_hz = int(model.sample_rate)
        self._speakers = _SpeakerRegistry(model, max_speakers)
        self._max_chunk_weight = max_chunk_weight
        self._stall_s = stall_s
        self._inner = getattr(model, "model", None)  # upstream's CosyVoice3Model: LLM thread, stream state
        self._guard = UpstreamGuard(self._inner)
        # Streaming grows the model's hop 25 -> 50 -> 100 tokens and never resets it; each request
        # starts again from the first hop, so its first chunk comes as early as the first request's.
        self._first_hop_len: int | None = getattr(self._inner, "token_hop_len", None)
        # Held for a whole request, a stream's whole life included: upstream keeps per-request state
        # on the model (the hop length above, its caches), and the worker calls one at a time anyway.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_dir: str | None,
        *,
        text_frontend: str = COSYVOICE_TEXT_FRONTENDS[0],
        wetext_dir: str | None = None,
        stall_s: float = DEFAULT_STALL_S,
        vllm: bool = False,
    ) -> CosyVoice3Engine:
        """Check the model directory and the text frontend's files, import upstream, load the model
        (slow: once per process). `text_frontend`, `wetext_dir`: COSYVOICE_TEXT_FRONTEND and
        COSYVOICE_WETEXT_DIR; the load fails rather than run without the normalisation asked for.
        `vllm`: COSYVOICE_VLLM, the LLM served by vLLM (GPU only; docs/COSYVOICE3.md)."""
        if text_frontend not in COSYVOICE_TEXT_FRONTENDS:
            raise EngineUnavailable(f"cosyvoice3: unknown text frontend {text_frontend!r}")
        directory = check_model_dir(model_dir)
        cosyvoice3 = import_upstream()
        if vllm and importlib.util.find_spec("vllm") is None:
            raise EngineUnavailable(
                "cosyvoice3: COSYVOICE_VLLM=true needs the vllm package, which the GPU image does not "
                "install; install it into the image (docs/COSYVOICE3.md) or set COSYVOICE_VLLM=false"
            )
        load_dir = writable_model_dir(directory) if vllm else directory
        with _offline_text_frontend(text_frontend, wetext_dir):
            try:
                model = cosyvoice3(str(load_dir), load_trt=False, load_vllm=vllm, fp16=False)
            except Exception as exc:  # whatever upstream raises here, the engine cannot start
                raise EngineUnavailable(f"cosyvoice3: loading {directory} failed: {exc}") from exc
        active = _settle_text_frontend(model, text_frontend)
        engine = cls(model, version=f"cosyvoice3-{directory.name}", text_frontend=active, stall_s=stall_s)
        if not _cuda_available():
            log.warning("no CUDA device: CosyVoice3 runs on the CPU, far slower than real time")
        log.info(
            "CosyVoice3 loaded from %s at %d Hz, text frontend %s, vLLM %s, speech tokenizer on %s",
            directory,
            engine.sample_rate_hz,
            active or "none",
            "on" if vllm else "off",
            tokenizer_providers(model),
        )
        return engine

    @property
    def registered_speakers(self) -> int:
        return len(self._speakers)

    def forget_speaker(self, speaker_key: str) -> int:
        """Release the cached features of a deleted voice; how many registrations were dropped."""
        with self._lock:
            return self._speakers.forget(speaker_key)

    def forget_voice(self, owner: str, voice_id: str) -> int:
        """ForgetsVoices: drop the speakers registered for the voice's requests; how many there were."""
        with self._lock:
            return self._speakers.forget_voice(owned_key(owner, voice_id))

    def synthesize(self, request: SynthesisRequest) -> Pcm:
        """Blocking; the text in chunks, each through the mode's inference call, joined in order."""
        samples = np.concatenate(list(self._speech(request, split_text, stream=False)))
        if samples.size == 0:
            raise EngineError("cosyvoice3 produced no audio")
        return Pcm(samples, self.sample_rate_hz)

    def synthesize_stream(self, request: SynthesisRequest) -> Iterator[Pcm]:
        """Blocking iterator: the speech in pieces as upstream makes them (`stream=True`).

        The first text chunk is short (text_chunks.stream_chunks), so the first audio comes early.
        `speed` other than 1 cannot stream upstream: then each text chunk comes whole. Closing the
        iterator early stops upstream; the model stays locked until then.
        """
        produced = False
        for samples in self._speech(request, stream_chunks, stream=request.speed == 1.0):
            if samples.size:
                produced = True
                yield Pcm(samples, self.sample_rate_hz)
        if not produced:
            raise EngineError("cosyvoice3 produced no audio")

    def _speech(
        self, request: SynthesisRequest, chunking: Callable[[str, float], list[str]], *, stream: bool
    ) -> Iterator[np.ndarray]:
        """The speech of `request` as float32 arrays, text chunk by text chunk, in order."""
        # Typed <|…|> would become control tokens (the tokenizer allows every special token).
        chunks = chunking(strip_special_tokens(request.text), self._max_chunk_weight)
        if not chunks:
            raise EngineInputError("nothing to say once markup is removed")
        prompt = prompt_for_upstream(request.prompt)
        transcript = strip_special_tokens(request.prompt_text).strip()
        mode = request.mode
        if mode == ZERO_SHOT and not transcript:
            mode = CROSS_LINGUAL  # upstream's own cross-lingual is zero-shot without a transcript
            log.info("zero_shot without a transcript: synthesising cross-lingual")
        with self._lock, _PromptWav(prompt) as prompt_wav:
            try:
                infer = self._inference_call(mode, request, prompt, transcript, prompt_wav, stream)
                calls = [self._call(infer, chunk, stream) for chunk in chunks]
                for output in run_calls(calls, self._guard, stall_s=self._stall_s):
                    yield _as_float32(output["tts_speech"])
            except EngineError:
                raise
            except Exception as exc:  # upstream's own errors: may pass on another worker or retry
                raise EngineError(f"cosyvoice3 {mode} failed: {type(exc).__name__}: {exc}") from exc

    def _call(
        self, infer: Callable[[str], Iterable[dict[str, Any]]], chunk: str, stream: bool
    ) -> Callable[[], Iterable[dict[str, Any]]]:
        """One upstream call for `chunk`, run when the call runs (on run_calls' thread)."""

        def call() -> Iterable[dict[str, Any]]:
            if stream and self._first_hop_len is not None:
                self._inner.token_hop_len = self._first_hop_len
            return infer(chunk)

        return call

    def _inference_call(
        self,
        mode: str,
        request: SynthesisRequest,
        prompt: Pcm,
        transcript: str,
        prompt_wav: _PromptWav,
        stream: bool,
    ) -> Callable[[str], Iterable[dict[str, Any]]]:
        """The upstream call for one chunk of text in `mode`, its registered speaker and options bound.

        With a registered speaker upstream reads neither prompt_text nor prompt_wav (its example
        passes ""), so the prompt is written to disk only to register it.
        """
        # `speed` works only off the streaming path.
        options = {"stream": stream, "speed": 1.0 if stream else request.speed}
        model = self._model

        def speaker(prompt_text: str) -> str:
            return self._speakers.ensure(
                request.speaker_key, prompt, prompt_text, prompt_wav.path, request.voice_key
            )

        if mode == INSTRUCT:
            assert request.instruct is not None  # SynthesisRequest guarantees it for this mode
            instruction = instruct_text(request.instruct)
            # Registered with the instruction as its prompt text, which instruct2 then keeps.
            instruct_id = speaker(instruction)
            return lambda chunk: model.inference_instruct2(
                chunk, instruction, "", zero_shot_spk_id=instruct_id, **options
            )
        # Cross-lingual shares zero-shot's registration: it drops the LLM's prompt and keeps the rest.
        speaker_id = speaker(zero_shot_prompt_text(transcript))
        if mode == ZERO_SHOT:
            return lambda chunk: model.inference_zero_shot(
                chunk, "", "", zero_shot_spk_id=speaker_id, **options
            )
        # cross_lingual. v3 needs no language tag, so request.language is not used.
        return lambda chunk: model.inference_cross_lingual(
            cross_lingual_tts_text(chunk), "", zero_shot_spk_id=speaker_id, **options
        )


def prompt_for_upstream(prompt: Pcm) -> Pcm:
    """The prompt at 24 kHz, or at its own rate between 16 and 24 kHz (lower ones are raised to 16 kHz,
    upstream's minimum), and at most MAX_PROMPT_S (uploads may run a fraction of a second over)."""
    if prompt.samples.size == 0:
        raise EngineInputError("the voice sample is empty")
    rate = min(PROMPT_RATE_HZ, max(MIN_PROMPT_RATE_HZ, prompt.sample_rate_hz))
    samples = prompt.samples if prompt.sample_rate_hz == rate else resample(prompt, rate)
    return Pcm(samples[: int(MAX_PROMPT_S * rate)], rate)


def writable_model_dir(directory: Path) -> Path:
    """A writable stand-in for `directory`, for `load_vllm`, which exports the LLM into `<dir>/vllm`.

    Production mounts the model directory read-only; the stand-in links each of its entries and has
    an empty `vllm/` of its own. It is removed when the process exits (vLLM reads it after load).
    """
    stand_in = Path(tempfile.mkdtemp(prefix="voicerelay-cosyvoice-"))
    atexit.register(shutil.rmtree, stand_in, ignore_errors=True)
    for entry in directory.iterdir():
        if entry.name != "vllm":
            (stand_in / entry.name).symlink_to(entry.resolve())
    (stand_in / "vllm").mkdir()
    return stand_in


def tokenizer_providers(model: Any) -> str:
    """Where the speech tokenizer's ONNX session runs ("CUDAExecutionProvider, …"): a CPU-only
    onnxruntime on a GPU machine is easy to miss and slows every prompt."""
    session = getattr(getattr(model, "frontend", None), "speech_tokenizer_session", None)
    get_providers = getattr(session, "get_providers", None)
    return ", ".join(get_providers()) if callable(get_providers) else "unknown providers"


class _PromptWav:
    """The prompt as a WAV file in a private temporary directory: written on first use (a registered
    voice needs none), removed on exit.

    A path, not a file object: upstream opens prompt_wav three times (tokens, features, speaker
    embedding), and a file object would be at its end after the first.
    """

    def __init__(self, prompt: Pcm) -> None:
        self._prompt = prompt
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def path(self) -> str:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="voicerelay-cosyvoice-")
            (Path(self._dir.name) / "prompt.wav").write_bytes(encode_audio(self._prompt, "wav"))
        return str(Path(self._dir.name) / "prompt.wav")

    def __enter__(self) -> _PromptWav:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _cuda_available() -> bool:
    import torch  # already imported by upstream when this runs

    return bool(torch.cuda.is_available())


def _as_float32(speech: Any) -> np.ndarray:
    """A `tts_speech` tensor (1, N) as float32 samples, finite and within [-1, 1]."""
    if hasattr(speech, "detach"):  # a torch tensor, possibly on the GPU
        speech = speech.detach().cpu().numpy()
    samples = np.array(speech, dtype=np.float32).reshape(-1)  # a copy: upstream's buffer stays its own
    np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(samples, -1.0, 1.0, out=samples)
