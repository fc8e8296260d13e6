"""Prometheus metrics of a worker process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from synth_worker.speaker.profiles import Profile


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Counter(
            "voicerelay_worker_tasks_total", "Jobs finished, by outcome", ["outcome"], registry=self.registry
        )
        self.task_transitions = Counter(
            "voicerelay_task_transitions_total",
            "Task state changes made by this process, by the state entered",
            ["status"],
            registry=self.registry,
        )
        self.synthesis_seconds = Histogram(
            "voicerelay_synthesis_seconds",
            "Engine time per job, in seconds",
            ["engine"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.real_time_factor = Histogram(
            "voicerelay_synthesis_real_time_factor",
            "Engine seconds per second of audio (below 1: faster than real time)",
            ["engine"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1, 2),
        )
        self.speaker_similarity = Histogram(
            "voicerelay_speaker_similarity",
            "Speaker similarity of the output to the voice's sample (cosine of speaker embeddings)",
            ["engine"],
            registry=self.registry,
            buckets=(0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0),
        )
        self.speaker_similarity_skipped = Counter(
            "voicerelay_speaker_similarity_skipped_total",
            "Succeeded tasks whose speaker similarity was not measured, by reason (backlog: the worker "
            "was not idle before more tasks finished; voice_deleted; shutdown)",
            ["engine", "reason"],
            registry=self.registry,
        )
        self.voice_sample_lookups = Counter(
            "voicerelay_voice_sample_lookups_total",
            "Voice samples jobs needed, by where the decoded sample came from (memory, stored)",
            ["outcome"],
            registry=self.registry,
        )
        self.speaker_profile_lookups = Counter(
            "voicerelay_speaker_profile_lookups_total",
            "Per-voice analyses looked up, by analysis and where the profile came from "
            "(memory, stored, computed)",
            ["analysis", "outcome"],
            registry=self.registry,
        )
        self.speaker_analysis_seconds = Histogram(
            "voicerelay_speaker_analysis_seconds",
            "Time to analyse a voice's sample when no cached profile existed, in seconds",
            ["analysis"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )

    def observe(self, engine: str, synthesis_s: float, audio_s: float, outcome: str) -> None:
        self.tasks.labels(outcome).inc()
        self.synthesis_seconds.labels(engine).observe(synthesis_s)
        self.real_time_factor.labels(engine).observe(synthesis_s / max(audio_s, 1e-6))

    def observe_profile(self, analysis: str, profile: Profile) -> None:
        self.speaker_profile_lookups.labels(analysis, profile.source).inc()
        if profile.analysis_s is not None:
            self.speaker_analysis_seconds.labels(analysis).observe(profile.analysis_s)
