"""`python -m ops bench voices`: what speaker adaptation costs and buys with the CPU engine.

In-process, no services: the espeak engine's real-time factor without and with a speaker profile, the
cost of a new voice (intake of a 10 s sample, the engine's speaker analysis, the sample's embedding for
the quality signal), and the speaker similarity of output to reference without and with adaptation.
References are real people (ops.recordings: fetched from package registries, skipped with a warning
when none is reachable) and generated "speakers": espeak voice variants, some pitch-shifted
(formants and pitch together, as a different vocal tract would). Every reference goes through the
gateway's intake, as an upload would. Prints a table and writes JSON (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from common.audio import Pcm, decode_audio, encode_audio
from common.logs import configure_logging
from ops.bench.report import RESULTS_DIR, machine, percentile, table
from ops.bench.scenarios import BenchError
from ops.recordings import RecordingsUnavailable, real_voices
from ops.samples import speech
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.espeak import EspeakEngine
from synth_worker.speaker.adaptation import SpeakerProfile
from synth_worker.speaker.embedding import cosine
from synth_worker.speaker.variants import candidate_names
from synth_worker.worker import load_speaker_encoder
from wechat_adapter.intake import analyse_sample

log = logging.getLogger(__name__)

RESULT_KEYS = ("meta", "synthesis", "new_voice", "similarity")
INTAKE_SAMPLE_S = 10.0
# The references say one thing, the outputs others, and the engine's variant catalogue a third
# (synth_worker.speaker.variants.REFERENCE_SENTENCE): similarity must come from the voice, not the words.
REFERENCE_TEXT = (
    "春天来了，花园里开满了红色和黄色的花。小鸟在树上唱歌，孩子们在草地上跑来跑去，大家都很开心。"
)
SENTENCES = (
    "请在下午三点以前把报告发到我的邮箱。",
    "这家饭馆的饺子很好吃，我们明天再来吧。",
    "火车晚点了二十分钟，我们只好在站台上等。",
    "周末的时候，我常常和朋友一起去爬山。",
    "图书馆每天早上八点开门，晚上十点关门。",
    "他把旧自行车修好了，骑起来又快又稳。",
    "今年冬天特别冷，河面上结了厚厚的冰。",
    "会议改到下周二上午，请大家相互转告。",
)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SyntheticSpeaker:
    """A reference voice: espeak `variant` (one of variants.candidate_names()), shifted by `semitones`."""

    name: str
    variant: str
    semitones: float = 0.0


SPEAKERS = (
    SyntheticSpeaker("m3", "voicerelay-m3"),
    SyntheticSpeaker("f2", "voicerelay-f2"),
    SyntheticSpeaker("default+4st", "voicerelay-steady", 4.0),
    SyntheticSpeaker("m1-3st", "voicerelay-m1", -3.0),
)


@dataclass(frozen=True, slots=True)
class VoicePlan:
    speakers: tuple[SyntheticSpeaker, ...]
    rtf_sentences: int  # sentences timed for the real-time factor, each without and with a profile
    similarity_sentences: int  # sentences per speaker for similarity
    intake_runs: int


DEFAULT_PLAN = VoicePlan(SPEAKERS, rtf_sentences=8, similarity_sentences=3, intake_runs=5)
QUICK_PLAN = VoicePlan(SPEAKERS[1:3], rtf_sentences=2, similarity_sentences=1, intake_runs=2)


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


class Bench:
    """The engine, the encoder and helpers to speak and compare; everything blocking, one thread."""

    def __init__(self) -> None:
        encoder, self.encoder_load_s = timed(load_speaker_encoder)  # as the worker loads it
        if encoder is None:
            raise BenchError("the speaker encoder cannot be imported: install the `voice` extra")
        self.encoder = encoder
        self.engine = EspeakEngine()
        self._silence = Pcm(np.zeros(16000, dtype=np.float32), 16000)

    def say(self, text: str, profile: bytes | None = None) -> Pcm:
        request = SynthesisRequest(
            text=text, mode="zero_shot", prompt=self._silence, prompt_text="", speaker_key="bench",
            speaker_profile=profile,
        )  # fmt: skip
        return self.engine.synthesize(request)

    def references(self, plan: VoicePlan) -> dict[str, Pcm]:
        """Speaker -> sample, real voices first, each as the gateway's intake stores it."""
        try:
            uploads = real_voices()
        except RecordingsUnavailable as exc:
            log.warning("measuring synthetic speakers only: %s", exc)
            uploads = {}
        uploads |= {s.name: encode_audio(self.reference(s), "wav") for s in plan.speakers}
        return {name: decode_audio(analyse_sample(upload).wav) for name, upload in uploads.items()}

    def reference(self, speaker: SyntheticSpeaker) -> Pcm:
        """REFERENCE_TEXT in the speaker's voice.

        Rendered through the engine with a neutral profile of the variant (no pitch mapping, no frame
        pool): WORLD analysis and resynthesis only, which alone moves similarity to the plain rendering
        by about 0.01.
        """
        spoken = self.say(REFERENCE_TEXT, self.unconverted(speaker.variant))
        if speaker.semitones == 0:
            return spoken
        import librosa  # imported here: slow to import, and only pitch-shifted references need it

        shifted = librosa.effects.pitch_shift(
            spoken.samples, sr=spoken.sample_rate_hz, n_steps=speaker.semitones
        )
        return Pcm(shifted.astype(np.float32), spoken.sample_rate_hz)

    def embed(self, pcm: Pcm) -> np.ndarray:
        return self.encoder.embed(pcm)

    def unconverted(self, variant: str, profile: bytes | None = None) -> bytes:
        """A profile of `variant` without a frame pool, with `profile`'s pitch mapping if given."""
        pitch = (None, None)
        if profile is not None:
            read = SpeakerProfile.from_bytes(profile, self.engine.profile_version, variants=candidate_names())
            pitch = (read.source_f0, read.target_f0)
        return SpeakerProfile(variant, *pitch).to_bytes(self.engine.profile_version)


def measure_synthesis(bench: Bench, profile: bytes, n: int) -> dict[str, Any]:
    """Real-time factor per sentence without and with a speaker profile (the first call warms up)."""
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
    bench.say(texts[0])
    bench.say(texts[0], profile)
    rows: dict[str, Any] = {}
    for name, used in (("plain", None), ("adapted", profile)):
        rtfs, cpu_rtfs, seconds, audio = [], [], [], []
        for text in texts:
            started_cpu = time.process_time()
            speech, elapsed = timed(lambda text=text, used=used: bench.say(text, used))
            rtfs.append(elapsed / speech.duration_s)
            cpu_rtfs.append((time.process_time() - started_cpu) / speech.duration_s)
            seconds.append(elapsed)
            audio.append(speech.duration_s)
        rows[name] = {
            "n": n,
            "rtf_p50": round(percentile(rtfs, 50), 5),
            "rtf_p99": round(percentile(rtfs, 99), 5),
            "cpu_rtf_p50": round(percentile(cpu_rtfs, 50), 5),
            "synthesis_p50_s": round(percentile(seconds, 50), 4),
            "audio_p50_s": round(percentile(audio, 50), 2),
        }
    return rows


def ten_second_upload() -> bytes:
    """10 s of speech as the mini program's recorder uploads it (M4A)."""
    pcm = speech(REFERENCE_TEXT + REFERENCE_TEXT)
    samples = pcm.samples[: int(INTAKE_SAMPLE_S * pcm.sample_rate_hz)]
    return encode_audio(Pcm(samples, pcm.sample_rate_hz), "aac")


def measure_intake(runs: int) -> dict[str, Any]:
    upload = ten_second_upload()
    seconds = [timed(lambda: analyse_sample(upload))[1] for _ in range(runs)]
    return {
        "sample_s": INTAKE_SAMPLE_S,
        "format": "m4a",
        "n": runs,
        "first_s": round(seconds[0], 4),
        "p50_s": round(percentile(seconds[1:] or seconds, 50), 4),
    }


def measure(bench: Bench, plan: VoicePlan) -> dict[str, Any]:
    log.info("speaker encoder loaded in %.1f s", bench.encoder_load_s)
    references = bench.references(plan)
    embeddings = {name: bench.embed(pcm) for name, pcm in references.items()}

    log.info("speaker analysis of %d references", len(references))
    profiles: dict[str, bytes] = {}
    analysis_s: list[float] = []
    for name, pcm in references.items():
        profiles[name], elapsed = timed(lambda pcm=pcm: bench.engine.analyse_speaker(pcm))
        analysis_s.append(elapsed)
    embedding_s = [timed(lambda pcm=pcm: bench.embed(pcm))[1] for pcm in references.values()]

    log.info("real-time factor")
    synthesis = measure_synthesis(bench, next(iter(profiles.values())), plan.rtf_sentences)
    log.info("intake")
    intake = measure_intake(plan.intake_runs)
    log.info("similarity")
    similarity = measure_similarity(bench, plan, embeddings, profiles)
    return {
        "synthesis": synthesis,
        "new_voice": {
            "intake": intake,
            "analysis_first_s": round(analysis_s[0], 3),
            "analysis_next_p50_s": round(percentile(analysis_s[1:], 50), 3) if len(analysis_s) > 1 else None,
            "analysis_n": len(analysis_s),
            "sample_embedding_p50_s": round(percentile(embedding_s, 50), 4),
            "encoder_load_s": round(bench.encoder_load_s, 2),
            "reference_s_range": [
                round(min(r.duration_s for r in references.values()), 1),
                round(max(r.duration_s for r in references.values()), 1),
            ],
        },
        "similarity": similarity,
    }


def measure_similarity(
    bench: Bench, plan: VoicePlan, embeddings: dict[str, np.ndarray], profiles: dict[str, bytes]
) -> dict[str, Any]:
    """Per speaker, mean over sentences: plain and adapted output vs its reference; adapted output vs
    every other speaker's reference (adaptation should move toward this speaker, not toward anyone),
    the closest of them and the margin; and the loudness contour of the adapted output against the
    same variant and pitch without the frame pool (intelligibility: syllables and pauses kept)."""
    texts = SENTENCES[-plan.similarity_sentences :]
    plain = [bench.embed(bench.say(text)) for text in texts]
    rows = []
    for name in embeddings:
        chosen = SpeakerProfile.from_bytes(
            profiles[name], bench.engine.profile_version, variants=candidate_names()
        )
        spoken = [bench.say(text, profiles[name]) for text in texts]
        adapted = [bench.embed(pcm) for pcm in spoken]
        others = {other: _mean_cosine(adapted, e) for other, e in embeddings.items() if other != name}
        closest = max(others, key=others.__getitem__)
        unconverted = bench.unconverted(chosen.variant, profiles[name])
        loudness = [
            loudness_correlation(pcm, bench.say(text, unconverted))
            for pcm, text in zip(spoken, texts, strict=True)
        ]
        rows.append(
            {
                "speaker": name,
                "variant": chosen.variant.removeprefix("voicerelay-"),
                "pool_frames": 0 if chosen.frames is None else len(chosen.frames.pool),
                "plain": _mean_cosine(plain, embeddings[name]),
                "adapted": _mean_cosine(adapted, embeddings[name]),
                "other_speaker": closest,
                "adapted_vs_other": others[closest],
                "loudness_corr": round(float(np.mean(loudness)), 3),
            }
        )
    for row in rows:
        row["gain"] = round(row["adapted"] - row["plain"], 3)
        row["margin"] = round(row["adapted"] - row["adapted_vs_other"], 3)
    means = {
        f"mean_{key}": round(float(np.mean([row[key] for row in rows])), 3)
        for key in ("plain", "adapted", "adapted_vs_other", "loudness_corr")
    }
    return {"sentences": len(texts), "rows": rows, "min_margin": min(row["margin"] for row in rows), **means}


def loudness_correlation(a: Pcm, b: Pcm, frame_s: float = 0.01) -> float:
    """Correlation of two renderings' loudness (dB per 10 ms frame) over their common length."""
    frame = int(frame_s * a.sample_rate_hz)
    n = min(len(a.samples), len(b.samples)) // frame * frame
    levels = [
        10 * np.log10(np.mean(pcm.samples[:n].reshape(-1, frame) ** 2, axis=1) + 1e-10) for pcm in (a, b)
    ]
    return float(np.corrcoef(*levels)[0, 1])


def _mean_cosine(outputs: Sequence[np.ndarray], reference: np.ndarray) -> float:
    return round(float(np.mean([cosine(output, reference) for output in outputs])), 3)


def render(results: dict[str, Any]) -> str:
    meta, synthesis, new_voice = results["meta"], results["synthesis"], results["new_voice"]
    m = meta["machine"]
    out = [
        f"VoiceRelay voice benchmark ({meta['mode']}), engine {meta['engine']}, "
        f"profile {meta['profile_version']}, {m['nproc']} CPUs {m['cpu_model']}",
        "\nsynthesis speed, espeak without and with a speaker profile",
    ]
    out.append(
        table(
            ["profile", "n", "RTF p50", "RTF p99", "CPU RTF p50", "synthesis ms p50", "audio s p50"],
            [
                [name, str(r["n"]), f"{r['rtf_p50']:.4f}", f"{r['rtf_p99']:.4f}", f"{r['cpu_rtf_p50']:.4f}",
                 f"{r['synthesis_p50_s'] * 1000:.1f}", f"{r['audio_p50_s']:.2f}"]
                for name, r in synthesis.items()
            ],
        )
    )  # fmt: skip
    intake, upload = new_voice["intake"], f"{new_voice['intake']['sample_s']:.0f} s M4A sample"
    costs = [
        (f"intake of a {upload} (analyse_sample), first call", intake["first_s"]),
        (f"intake of a {upload}, p50 of the next {intake['n'] - 1}", intake["p50_s"]),
        ("speaker analysis, first voice (with the variants' embeddings)", new_voice["analysis_first_s"]),
        (
            f"speaker analysis, next voice p50 (n={new_voice['analysis_n'] - 1})",
            new_voice["analysis_next_p50_s"],
        ),
        ("sample embedding for the similarity signal, p50", new_voice["sample_embedding_p50_s"]),
        ("speaker encoder load (once per worker process)", new_voice["encoder_load_s"]),
    ]
    shortest, longest = new_voice["reference_s_range"]
    out.append(f"\ncost of a new voice (references of {shortest:.1f}–{longest:.1f} s), ms")
    out.append(table(["step", "ms"], [[step, "-" if s is None else f"{s * 1000:.1f}"] for step, s in costs]))
    s = results["similarity"]
    out.append(
        f"\nspeaker similarity to the reference, Resemblyzer cosine, mean over {s['sentences']} sentence(s)"
    )
    out.append(
        table(
            ["speaker", "variant", "pool", "plain", "adapted", "gain", "closest other speaker", "margin",
             "loudness r"],
            [
                [r["speaker"], r["variant"], str(r["pool_frames"]), f"{r['plain']:.3f}",
                 f"{r['adapted']:.3f}", f"{r['gain']:+.3f}",
                 f"{r['adapted_vs_other']:.3f} ({r['other_speaker']})", f"{r['margin']:+.3f}",
                 f"{r['loudness_corr']:.2f}"]
                for r in s["rows"]
            ]
            + [["mean", "", "", f"{s['mean_plain']:.3f}", f"{s['mean_adapted']:.3f}",
                f"{s['mean_adapted'] - s['mean_plain']:+.3f}", f"{s['mean_adapted_vs_other']:.3f}",
                f"min {s['min_margin']:+.3f}", f"{s['mean_loudness_corr']:.2f}"]],
        )
    )  # fmt: skip
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Measure, print the tables, write the JSON; 0 on success."""
    configure_logging("INFO", process="bench")
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    out: Path = args.out or RESULTS_DIR / f"voices-{time.strftime('%Y%m%dT%H%M%S')}.json"
    started = time.time()
    try:
        bench = Bench()
        measured = measure(bench, plan)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    results = {
        "meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "mode": "quick" if args.quick else "default",
            "engine": bench.engine.version,
            "profile_version": bench.engine.profile_version,
            "plan": {
                "speakers": [vars_of(s) for s in plan.speakers],
                "rtf_sentences": plan.rtf_sentences,
                "similarity_sentences": plan.similarity_sentences,
                "intake_runs": plan.intake_runs,
            },
            "machine": machine(),
        },
        **measured,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(render(results))
    print(f"\nresults: {out}")
    return 0


def vars_of(speaker: SyntheticSpeaker) -> dict[str, Any]:
    return {"name": speaker.name, "variant": speaker.variant, "semitones": speaker.semitones}
