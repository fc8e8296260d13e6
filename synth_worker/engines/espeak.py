"""The CPU engine: espeak-ng 1.52 through ctypes, for development, CI and laptops.

It speaks the text in Mandarin, Cantonese or English, and moves toward the prompt voice: it starts
from the espeak voice variant whose speaker embedding is closest to the prompt, maps pitch with WORLD
and rebuilds each frame's spectral envelope from the prompt's nearest frames (synth_worker.speaker).
That is espeak's timing and articulation in the speaker's timbre, not a clone: a stand-in so the
whole pipeline runs without a GPU, where production runs cosyvoice3 (docs/COSYVOICE3.md).
The library and its data (with `cmn` and `yue`) come from the `espeakng-loader` wheel.
"""

from __future__ import annotations

import ctypes
import logging
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import espeakng_loader
import numpy as np

from common.audio import Pcm, resample
from common.vocabulary import ESPEAK
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.errors import EngineError, EngineInputError, EngineUnavailable
from synth_worker.engines.text_chunks import stream_chunks
from synth_worker.speaker import variants
from synth_worker.speaker.adaptation import LogF0Stats, SpeakerProfile, WorldFeatures, adapt
from synth_worker.speaker.embedding import SpeakerEncoder, shared_encoder
from synth_worker.speaker.frame_pool import FrameConversion

log = logging.getLogger(__name__)

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
# int callback(short *wav, int numsamples, espeak_EVENT *events); returning 0 continues synthesis.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_BASE_RATE_WPM = 175  # espeak's default speaking rate
_MIN_RATE_WPM, _MAX_RATE_WPM = 80, 450
# A stream's pieces after the first: a sentence or two (text_chunks.chunk_weight, about a Han
# character each), a second or three of speech.
_STREAM_CHUNK_WEIGHT = 40.0
_PROFILE_FORMAT = "knn-1"  # bump when the analysis or the profile's meaning changes

_MANDARIN, _CANTONESE, _ENGLISH = "cmn", "yue", "en"
_CANTONESE_PRESET = "guangdong"  # 粤语（广东话）
# Explicit request.language -> espeak voice; all of these ship in the wheel's data.
_LANGUAGE_VOICES = {
    "zh": _MANDARIN, "cmn": _MANDARIN, "yue": _CANTONESE, "en": _ENGLISH,
    "ja": "ja", "ko": "ko", "de": "de", "es": "es", "fr": "fr", "it": "it", "ru": "ru",
}  # fmt: skip
# How espeak approximates the other presets. Dialects other than Cantonese have no espeak voice
# and are spoken in Mandarin.
_PRESET_RATE_FACTORS = {"faster": 1.3, "slower": 0.75}
_NEUTRAL_VOLUME = 100  # espeak amplitude, 0..200
_PRESET_VOLUMES = {"louder": 150, "softer": 55}
_PRESET_PITCH_RANGES = {"happy": (65, 80), "sad": (38, 25), "angry": (55, 90)}  # 0..100, default 50/50

# CosyVoice markup that espeak would read aloud: [breath], [laughter], pinyin fixes such as
# 她[h][ào]干净, and <strong>…</strong>. Brackets must start with a Latin letter, so "[1]" stays.
_BRACKET_TAG = re.compile(r"\[[A-Za-z\u00c0-\u024f][A-Za-z\u00c0-\u024f0-9_-]{0,31}\]")
_STRONG_TAG = re.compile(r"</?strong>", re.IGNORECASE)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")  # a NUL would end the C string early
_SPACES = re.compile(r"\s+")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_HAN_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def strip_markup(text: str) -> str:
    """The text espeak should speak: CosyVoice's inline markup and control characters removed."""
    text = _STRONG_TAG.sub("", _BRACKET_TAG.sub("", text))
    return _SPACES.sub(" ", _CONTROL_CHARS.sub(" ", text)).strip()


def choose_voice(text: str, *, instruct: str | None, language: str | None) -> str:
    """The espeak voice: an explicit language, else English for mostly-Latin text, else Chinese.

    Chinese is Mandarin unless the preset asks for Cantonese.
    """
    if language is not None:
        voice = _LANGUAGE_VOICES.get(language.lower())
        if voice is None:
            raise EngineInputError(f"espeak does not speak language {language!r}")
    elif len(_LATIN_WORD.findall(text)) > len(_HAN_CHAR.findall(text)):
        voice = _ENGLISH
    else:
        voice = _MANDARIN
    return _CANTONESE if voice == _MANDARIN and instruct == _CANTONESE_PRESET else voice


@dataclass(frozen=True)
class Prosody:
    """espeak's own parameter scales, set afresh on every call (the library remembers them)."""

    rate_wpm: int
    volume: int = _NEUTRAL_VOLUME
    pitch: int = 50
    pitch_range: int = 50

    @classmethod
    def for_request(cls, speed: float, instruct: str | None) -> Prosody:
        wpm = _BASE_RATE_WPM * speed * _PRESET_RATE_FACTORS.get(instruct or "", 1.0)
        pitch, pitch_range = _PRESET_PITCH_RANGES.get(instruct or "", (50, 50))
        return cls(
            rate_wpm=min(_MAX_RATE_WPM, max(_MIN_RATE_WPM, round(wpm))),
            volume=_PRESET_VOLUMES.get(instruct or "", _NEUTRAL_VOLUME),
            pitch=pitch,
            pitch_range=pitch_range,
        )


class EspeakEngine:
    """Engine "espeak": Pcm float32 at 22050 Hz, identical output for identical requests.

    Speaker-adaptive: `analyse_speaker` once per voice, its bytes in every request's
    `speaker_profile`. Use one call at a time (as the worker's single-thread executor does): every
    instance drives the same process-wide C library, so concurrent calls only queue on its lock.
    """

    name = ESPEAK

    def __init__(self, encoder: Callable[[], SpeakerEncoder] = shared_encoder) -> None:
        self._native = _native_library()
        self.version = f"espeak-ng-{self._native.version}"
        self.profile_version = f"{self.version}/{_PROFILE_FORMAT}"
        self.sample_rate_hz = self._native.sample_rate_hz
        self._encoder = encoder  # loaded on the first analysis only: synthesis never needs it
        self._catalogue = variants.VariantCatalogue(self._render_reference, encoder)

    def synthesize(self, request: SynthesisRequest) -> Pcm:
        """Blocking: per second of speech about 1 ms of CPU, or about 0.1 s with a speaker profile.

        Raises ProfileError (an EngineInputError) for a profile this engine did not make.
        """
        utterance = self._utterance(request)
        return utterance.speak(utterance.text)

    def synthesize_stream(self, request: SynthesisRequest) -> Iterator[Pcm]:
        """Blocking iterator: the speech sentence by sentence (text_chunks.stream_chunks: the first
        piece a short clause), each piece spoken and adapted on its own."""
        utterance = self._utterance(request)
        for chunk in stream_chunks(utterance.text, _STREAM_CHUNK_WEIGHT):
            yield utterance.speak(chunk)

    def _utterance(self, request: SynthesisRequest) -> _Utterance:
        profile = None
        if request.speaker_profile is not None:
            profile = SpeakerProfile.from_bytes(
                request.speaker_profile, self.profile_version, variants=variants.candidate_names()
            )
        text = strip_markup(request.text)
        if not text:
            raise EngineInputError("nothing to say once markup is removed")
        voice = choose_voice(text, instruct=request.instruct, language=request.language)
        prosody = Prosody.for_request(request.speed, request.instruct)
        return _Utterance(self._native, self.sample_rate_hz, text, voice, prosody, profile)

    def analyse_speaker(self, prompt: Pcm) -> bytes:
        """The prompt's speaker profile: blocking and deterministic, about a second (docs/VOICES.md).

        The closest variant by speaker embedding; the prompt's pitch; and the conversion from that
        variant's frames to the prompt's (frame_pool), both analysed at the engine's own rate.
        Choosing the variant by how its converted speech scores instead was tried: 13 times the
        work, and it chose the same variant for the ARCTIC speaker.
        """
        variant = self._catalogue.closest(self._encoder().embed(prompt))
        reference = WorldFeatures.analyse(self._render_reference(variant))
        speaker = WorldFeatures.analyse(Pcm(resample(prompt, self.sample_rate_hz), self.sample_rate_hz))
        frames = FrameConversion.fit(reference.envelope, speaker.envelope, speaker.f0_hz, self.sample_rate_hz)
        source_f0, target_f0 = LogF0Stats.of(reference.f0_hz), LogF0Stats.of(speaker.f0_hz)
        profile = SpeakerProfile(variant, source_f0, target_f0, frames)
        pool = "no frame pool" if frames is None else f"{len(frames.pool)} frames"
        log.info("speaker profile: variant %s, pitch %s, %s", variant, profile.target_f0, pool)
        return profile.to_bytes(self.profile_version)

    def _render_reference(self, variant: str) -> Pcm:
        pcm16 = self._native.synthesize(
            variants.REFERENCE_SENTENCE, _MANDARIN, Prosody(rate_wpm=_BASE_RATE_WPM), variant
        )
        return Pcm(pcm16.astype(np.float32) / 32768.0, self.sample_rate_hz)


@dataclass(frozen=True)
class _Utterance:
    """One request's text, voice, prosody and speaker profile: speaks the text or any piece of it."""

    native: _NativeEspeak
    sample_rate_hz: int
    text: str
    voice: str
    prosody: Prosody
    profile: SpeakerProfile | None

    def speak(self, text: str) -> Pcm:
        variant = self.profile.variant if self.profile else variants.STEADY
        # Speech rebuilt from the speaker's frames takes their level: espeak speaks it at neutral
        # volume (the level its frames were normalised at) and the preset's volume is a gain after.
        rebuilt = self.profile is not None and self.profile.frames is not None
        prosody = replace(self.prosody, volume=_NEUTRAL_VOLUME) if rebuilt else self.prosody
        pcm16 = self.native.synthesize(text, self.voice, prosody, variant)
        if pcm16.size == 0:
            raise EngineInputError("espeak produced no audio for this text")
        speech = Pcm(pcm16.astype(np.float32) / 32768.0, self.sample_rate_hz)
        if self.profile is None:
            return speech
        gain = self.prosody.volume / _NEUTRAL_VOLUME  # espeak's amplitude scale is linear
        return adapt(WorldFeatures.analyse(speech), self.profile, gain=gain)


class _NativeEspeak:
    """The process's libespeak-ng.

    The C library has one global state per process (data path, voice, parameters, the synth
    callback, the wave generator), so there is one instance of this class per process, shared by
    every EspeakEngine, and each call holds `_NATIVE_LOCK` from setting the voice to the last sample.
    """

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            source = Path(espeakng_loader.get_data_path())
            data_dir = _steady_data_dir(source)  # read during synthesis too: removed only with this object
        except (OSError, RuntimeError) as exc:
            raise EngineUnavailable(f"libespeak-ng from espeakng-loader cannot be set up: {exc}") from exc
        weakref.finalize(self, shutil.rmtree, data_dir, ignore_errors=True)
        _declare_signatures(lib)
        rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_dir).encode(), 0)
        if rate_hz <= 0:
            raise EngineUnavailable(f"espeak_Initialize failed with data at {source}")
        self._lib = lib
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # referenced here: C keeps only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate_hz: int = rate_hz
        self.version: str = lib.espeak_Info(None).decode()
        for voice in (_MANDARIN, _CANTONESE, _ENGLISH):
            if lib.espeak_SetVoiceByName(f"{voice}+{variants.STEADY}".encode()) != _EE_OK:
                raise EngineUnavailable(f"espeak-ng data at {source} lacks the {voice!r} voice")
        log.info("espeak-ng %s ready at %d Hz", self.version, rate_hz)

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], n_samples: int, _events: int | None) -> int:
        if wav and n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, n_samples * 2))
        return 0

    def synthesize(self, text: str, voice: str, prosody: Prosody, variant: str) -> np.ndarray:
        """int16 samples of `text` spoken by `voice` with voice variant `variant`."""
        encoded = text.encode("utf-8")
        with _NATIVE_LOCK:
            if self._lib.espeak_SetVoiceByName(f"{voice}+{variant}".encode()) != _EE_OK:
                raise EngineError(f"espeak cannot select voice {voice!r} with variant {variant!r}")
            # All four on every call: the library would otherwise keep the previous call's values.
            for parameter, value in (
                (_PARAM_RATE, prosody.rate_wpm),
                (_PARAM_VOLUME, prosody.volume),
                (_PARAM_PITCH, prosody.pitch),
                (_PARAM_RANGE, prosody.pitch_range),
            ):
                self._lib.espeak_SetParameter(parameter, value, 0)
            self._chunks = []
            status = self._lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if status != _EE_OK:
            raise EngineError(f"espeak_Synth failed with status {status}")
        return np.frombuffer(b"".join(chunks), dtype=np.int16)


def _declare_signatures(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p


def _steady_data_dir(source: Path) -> Path:
    """espeak's data directory, linked entry by entry, with steady copies of its voice variants.

    espeak-ng keeps the phases of its pitch flutter and voice roughness in static variables that
    run on from call to call (and breath noise draws on rand()), so the same text came out a few
    samples different each time. Our variants turn all three off (variants.steady_variant_text),
    which makes the output depend on the request alone. espeak reads variants only from its data
    directory, and the installed one is left untouched.
    """
    root = Path(tempfile.mkdtemp(prefix="voicerelay-espeak-"))
    for entry in source.iterdir():
        if entry.name != "voices":
            (root / entry.name).symlink_to(entry)
    steady = root / "voices" / "!v"
    steady.mkdir(parents=True)
    variants.write_steady_variants(source / "voices" / "!v", steady)
    return root


# Process-wide because libespeak-ng is (see _NativeEspeak); created on first use.
_NATIVE_LOCK = threading.Lock()
_native: _NativeEspeak | None = None


def _native_library() -> _NativeEspeak:
    global _native
    with _NATIVE_LOCK:
        if _native is None:
            _native = _NativeEspeak()
        return _native
