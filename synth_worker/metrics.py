"""Prometheus metrics of a worker process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


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

    def observe(self, engine: str, synthesis_s: float, audio_s: float, outcome: str) -> None:
        self.tasks.labels(outcome).inc()
        self.synthesis_seconds.labels(engine).observe(synthesis_s)
        self.real_time_factor.labels(engine).observe(synthesis_s / max(audio_s, 1e-6))
