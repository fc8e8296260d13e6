"""The CPU engine moves toward the prompt's speaker: variant choice, WORLD pitch mapping, frame pool.

Two "speakers" are made from espeak itself (a female variant pitched up and a male variant pitched
down, speaking a text unlike the engine's reference sentence), and the Resemblyzer encoder judges
who the adapted output sounds like. Real human voices: tests/test_real_voices.py.
"""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from common.audio import Pcm, resample, rms_dbfs
from synth_worker.engines.base import SynthesisRequest, adapts_to_speaker
from synth_worker.engines.errors import EngineInputError
from synth_worker.engines.espeak import EspeakEngine
from synth_worker.speaker import frame_pool, variants
from synth_worker.speaker.adaptation import LogF0Stats, ProfileError, SpeakerProfile, WorldFeatures, map_f0
from synth_worker.speaker.embedding import SpeakerEncoder, shared_encoder

SPEAKER_TEXT = "我每天早上七点起床，先喝一杯热水，然后骑自行车去上班。周末的时候，我常常和朋友一起爬山。"
TASK_TEXT = "请问去火车站怎么走？我想坐下午三点的车回家。路上小心，到了给我打电话。"
NO_PROMPT = Pcm(np.zeros(16_000, np.float32), 16_000)
# name -> (variant, F0 factor): far apart in pitch and vocal tract
SPEAKERS = {"A": ("voicerelay-f2", 1.25), "B": ("voicerelay-m3", 0.8)}


def request(text: str, profile: bytes | None = None, **overrides: object) -> SynthesisRequest:
    fields: dict[str, object] = {
        "mode": "zero_shot", "prompt": NO_PROMPT, "prompt_text": "", "speaker_key": "o_test.abc",
    }  # fmt: skip
    fields.update(overrides)
    return SynthesisRequest(text=text, speaker_profile=profile, **fields)  # type: ignore[arg-type]


def read(engine: EspeakEngine, data: bytes) -> SpeakerProfile:
    return SpeakerProfile.from_bytes(data, engine.profile_version, variants=variants.candidate_names())


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return shared_encoder()


@pytest.fixture(scope="module")
def samples(engine: EspeakEngine) -> dict[str, Pcm]:
    """Each speaker's voice sample, 16 kHz as the worker hands it over.

    Made through the engine's own adaptation with a hand-written profile without a frame pool: a
    log-F0 shift of log(factor) with the spread kept.
    """
    made = {}
    for name, (variant, f0_factor) in SPEAKERS.items():
        shift = SpeakerProfile(variant, LogF0Stats(0.0, 1.0), LogF0Stats(math.log(f0_factor), 1.0))
        pcm = engine.synthesize(request(SPEAKER_TEXT, shift.to_bytes(engine.profile_version)))
        made[name] = Pcm(resample(pcm, 16_000), 16_000)
    return made


@pytest.fixture(scope="module")
def profiles(engine: EspeakEngine, samples: dict[str, Pcm]) -> dict[str, bytes]:
    return {name: engine.analyse_speaker(pcm) for name, pcm in samples.items()}


def test_the_engine_is_speaker_adaptive(engine: EspeakEngine) -> None:
    assert adapts_to_speaker(engine) is engine
    assert engine.profile_version.startswith(engine.version)


@pytest.mark.parametrize(("own", "other"), [("A", "B"), ("B", "A")])
def test_adapted_speech_sounds_like_its_own_sample(
    engine: EspeakEngine,
    encoder: SpeakerEncoder,
    samples: dict[str, Pcm],
    profiles: dict[str, bytes],
    own: str,
    other: str,
) -> None:
    """Done-when of issue #4: closer to its own sample than to another speaker's, and than unadapted."""
    adapted = encoder.embed(engine.synthesize(request(TASK_TEXT, profiles[own])))
    plain = encoder.embed(engine.synthesize(request(TASK_TEXT)))
    own_sample, other_sample = encoder.embed(samples[own]), encoder.embed(samples[other])

    to_own = float(adapted @ own_sample)  # embeddings are unit length: the dot is the cosine
    assert to_own > float(adapted @ other_sample) + 0.2
    assert to_own > float(plain @ own_sample) + 0.05  # B is near the plain voice already (0.89)
    assert to_own > 0.9


def test_profile_is_deterministic_versioned_and_bounded(
    engine: EspeakEngine, samples: dict[str, Pcm], profiles: dict[str, bytes]
) -> None:
    assert engine.analyse_speaker(samples["A"]) == profiles["A"]
    assert profiles["A"] != profiles["B"]
    for data in profiles.values():
        header, _, body = data.partition(b"\n")
        fields = json.loads(header)
        assert fields["version"] == engine.profile_version
        assert fields["variant"] in variants.candidate_names()
        frames = fields["frames"]["frames"]
        assert frame_pool.MIN_POOL_FRAMES < frames <= frame_pool.MAX_POOL_FRAMES
        assert len(body) == frames * frame_pool.CODED_DIMS * 2 + math.ceil(frames / 8)
        assert len(data) < 400_000


def test_a_long_sample_is_thinned_to_the_pool_limit(engine: EspeakEngine, samples: dict[str, Pcm]) -> None:
    """A 30 s sample keeps MAX_POOL_FRAMES evenly spread frames, not its first 15 s."""
    long_sample = Pcm(np.tile(samples["B"].samples, 4), samples["B"].sample_rate_hz)
    profile = read(engine, engine.analyse_speaker(long_sample))
    assert profile.frames is not None
    assert len(profile.frames.pool) <= frame_pool.MAX_POOL_FRAMES
    assert len(profile.frames.pool) > 0.6 * frame_pool.MAX_POOL_FRAMES


@pytest.mark.parametrize("name", ["A", "B"])
def test_the_profile_measures_the_samples_pitch(
    engine: EspeakEngine, profiles: dict[str, bytes], name: str
) -> None:
    variant, f0_factor = SPEAKERS[name]
    unshifted = SpeakerProfile(variant, None, None).to_bytes(engine.profile_version)
    natural = LogF0Stats.of(WorldFeatures.analyse(engine.synthesize(request(SPEAKER_TEXT, unshifted))).f0_hz)
    measured = read(engine, profiles[name]).target_f0
    assert natural is not None and measured is not None
    assert measured.mean == pytest.approx(natural.mean + math.log(f0_factor), abs=0.03)
    assert measured.std == pytest.approx(natural.std, rel=0.2)


def test_adapted_synthesis_is_deterministic_and_leaves_plain_synthesis_alone(
    engine: EspeakEngine, profiles: dict[str, bytes]
) -> None:
    plain_before = engine.synthesize(request(TASK_TEXT))
    first = engine.synthesize(request(TASK_TEXT, profiles["A"]))
    engine.synthesize(request("别的句子。", profiles["B"]))
    again = engine.synthesize(request(TASK_TEXT, profiles["A"]))
    plain_after = engine.synthesize(request(TASK_TEXT))

    assert np.array_equal(first.samples, again.samples)
    assert np.array_equal(plain_before.samples, plain_after.samples)
    assert first.sample_rate_hz == engine.sample_rate_hz and first.samples.dtype == np.float32
    assert np.abs(first.samples).max() <= 1.0
    assert first.duration_s == pytest.approx(plain_before.duration_s, abs=0.2)


def test_speed_and_presets_still_apply_with_a_profile(
    engine: EspeakEngine, profiles: dict[str, bytes]
) -> None:
    def say(**overrides: object) -> Pcm:
        return engine.synthesize(request(TASK_TEXT, profiles["B"], **overrides))

    assert say(speed=2.0).duration_s < 0.65 * say().duration_s
    # WORLD resynthesis and the peak limiter narrow espeak's loudness gap (about 5 dB here)
    assert (
        rms_dbfs(say(mode="instruct", instruct="louder"))
        > rms_dbfs(say(mode="instruct", instruct="softer")) + 4
    )
    mandarin, cantonese = say(), say(mode="instruct", instruct="guangdong")
    common = min(len(mandarin.samples), len(cantonese.samples))
    assert not np.array_equal(mandarin.samples[:common], cantonese.samples[:common])


def test_a_prompt_without_voicing_keeps_the_variants_pitch_and_envelope(engine: EspeakEngine) -> None:
    data = engine.analyse_speaker(NO_PROMPT)
    profile = read(engine, data)
    assert profile.target_f0 is None and profile.frames is None
    assert engine.synthesize(request(TASK_TEXT, data)).duration_s > 2


MISSING = object()


def profile_json(engine_version: str, **changes: object) -> bytes:
    """A hand-written profile for `engine_version`; a change to MISSING leaves that field out."""
    fields: dict[str, object] = {
        "version": engine_version, "variant": variants.STEADY, "frames": None,
        "source_f0": [4.5, 0.1], "target_f0": [5.2, 0.15],
    }  # fmt: skip
    fields.update(changes)
    return json.dumps({key: value for key, value in fields.items() if value is not MISSING}).encode()


def test_a_wellformed_profile_is_read_back(engine: EspeakEngine, profiles: dict[str, bytes]) -> None:
    profile = read(engine, profile_json(engine.profile_version))
    assert (profile.variant, profile.source_f0, profile.target_f0, profile.frames) == (
        variants.STEADY, LogF0Stats(4.5, 0.1), LogF0Stats(5.2, 0.15), None,
    )  # fmt: skip
    assert read(engine, profile.to_bytes(engine.profile_version)).to_bytes("v") == profile.to_bytes("v")
    assert read(engine, profiles["A"]).to_bytes(engine.profile_version) == profiles["A"]


def pool_corruptions(data: bytes) -> list[bytes]:
    """A real profile broken in the ways a damaged cache entry could be."""
    header, _, body = data.partition(b"\n")
    fields = json.loads(header)

    def with_frames(**changes: object) -> bytes:
        frames = {**fields["frames"], **changes}
        return json.dumps({**fields, "frames": frames}).encode() + b"\n" + body

    nan = np.frombuffer(body[:2], dtype="<f2").copy()
    nan[0] = np.nan
    return [
        header + b"\n" + body[:-7],  # truncated
        header + b"\n" + body + b"\0",  # trailing bytes
        header + b"\n" + nan.tobytes() + body[2:],  # a non-finite frame
        with_frames(dims=24),
        with_frames(frames=3),  # fewer frames than a pool may hold
        with_frames(frames="many"),
        with_frames(source={"mean": [0.0] * 60, "std": [0.0] * 60}),
        with_frames(source={"mean": [0.0], "std": [1.0]}),
        json.dumps({**fields, "frames": None}).encode() + b"\n" + body,  # a body without its header
    ]


def test_a_corrupt_frame_pool_fails_the_task_clearly(
    engine: EspeakEngine, profiles: dict[str, bytes]
) -> None:
    for data in pool_corruptions(profiles["A"]):
        with pytest.raises(ProfileError, match="speaker profile is malformed"):
            engine.synthesize(request(TASK_TEXT, data))


@pytest.mark.parametrize(
    "corruption",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        {"version": "espeak-ng-1.52.0/world-1"},  # another analysis: never read as ours
        {"variant": "m1"},  # not one of the engine's steady variants
        {"frames": MISSING},
        {"target_f0": [5.2]},
        {"source_f0": [4.5, -0.1]},
    ],
)
def test_a_foreign_or_corrupt_profile_fails_the_task_clearly(
    engine: EspeakEngine, corruption: bytes | dict[str, object]
) -> None:
    """Deliberately an error, not an unadapted voice: a user would hear the wrong voice without a trace.

    ProfileError is an EngineInputError (the task fails, not retried); the worker can catch it to
    drop that cache entry and analyse the voice again.
    """
    data = corruption if isinstance(corruption, bytes) else profile_json(engine.profile_version, **corruption)
    with pytest.raises(ProfileError, match="speaker profile"):
        engine.synthesize(request(TASK_TEXT, data))
    assert issubclass(ProfileError, EngineInputError)


def test_every_candidate_variant_is_steady(engine: EspeakEngine) -> None:
    """Shipped variants carry flutter, roughness and breath noise state across calls; ours do not."""
    for name in variants.candidate_names():
        shift = SpeakerProfile(name, None, None).to_bytes(engine.profile_version)
        first = engine.synthesize(request("你好，世界。", shift))
        engine.synthesize(request("Something else, to move any running state on."))
        assert np.array_equal(first.samples, engine.synthesize(request("你好，世界。", shift)).samples), name
    text = variants.steady_variant_text(
        "voicerelay-f1", "name female1\npitch 140 200\nflutter 8\nbreath 0 2 3\n"
    )
    assert text == "language variant\nname voicerelay-f1\npitch 140 200\nflutter 0\nroughness 0\n"


def test_map_f0_reaches_the_target_statistics() -> None:
    rng = np.random.default_rng(0)
    f0 = np.exp(rng.normal(4.6, 0.1, 400))
    f0[::5] = 0.0  # unvoiced frames stay unvoiced
    mapped = map_f0(f0, LogF0Stats.of(f0), LogF0Stats(5.3, 0.2))
    assert np.array_equal(mapped == 0, f0 == 0)
    log_mapped = np.log(mapped[mapped > 0])
    assert log_mapped.mean() == pytest.approx(5.3, abs=0.01) and log_mapped.std() == pytest.approx(
        0.2, abs=0.01
    )


def test_octave_errors_do_not_widen_the_pitch_spread() -> None:
    f0 = np.full(200, 120.0) * np.exp(np.linspace(-0.1, 0.1, 200))
    doubled = f0.copy()
    doubled[::20] *= 2  # the tracker jumping an octave now and then
    clean, noisy = LogF0Stats.of(f0), LogF0Stats.of(doubled)
    assert clean is not None and noisy is not None
    assert noisy.std == pytest.approx(clean.std, abs=0.01)
    assert LogF0Stats.of(np.zeros(100)) is None


def test_variant_embeddings_are_computed_once_and_lazily() -> None:
    """Made on the first analysis only (worker start-up stays fast), once even with racing threads."""
    rendered: list[str] = []
    loads: list[int] = []

    class FakeEncoder:
        def embed(self, pcm: Pcm) -> np.ndarray:
            return np.array([1.0, float(pcm.samples[0])], dtype=np.float32)

    def render(name: str) -> Pcm:
        rendered.append(name)
        return Pcm(np.full(10, 0.9 if name == "voicerelay-m4" else -0.5, np.float32), 16_000)

    def load_encoder() -> FakeEncoder:
        loads.append(1)
        return FakeEncoder()

    catalogue = variants.VariantCatalogue(render, load_encoder)  # type: ignore[arg-type]
    assert not rendered and not loads
    threads = [threading.Thread(target=catalogue.embeddings) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(rendered) == sorted(variants.candidate_names()) and len(loads) == 1
    assert catalogue.closest(np.array([1.0, 0.9], np.float32)) == "voicerelay-m4"


def test_the_engine_loads_no_encoder_until_it_analyses(engine: EspeakEngine) -> None:
    loads: list[int] = []
    lazy = EspeakEngine(encoder=lambda: loads.append(1) or shared_encoder())  # type: ignore[func-returns-value]
    lazy.synthesize(request(TASK_TEXT))
    assert not loads
