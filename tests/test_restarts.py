"""What `ops up` supervises, without processes: the restart policy (ops.services.restarts) and the
worker count it reads (WORKERS, each worker on its own metrics port)."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from ops.services.restarts import Backoff, RestartPolicy
from ops.up import UpConfig, banner


def test_delays_double_from_one_second_up_to_thirty() -> None:
    policy = RestartPolicy()
    assert [policy.delay_s(attempt) for attempt in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.delay_s(10_000) == 30  # a long crash loop neither grows nor overflows
    with pytest.raises(ValueError):
        policy.delay_s(0)


def test_a_crash_loop_backs_off_and_a_stable_run_starts_over() -> None:
    backoff = Backoff(RestartPolicy(first_delay_s=1, max_delay_s=30, stable_after_s=60))
    assert [backoff.next_delay_s(uptime_s=0.5) for _ in range(4)] == [1, 2, 4, 8]
    assert (backoff.attempt, backoff.restarts) == (4, 4)
    # Up for 59 s is still the same streak; up for 60 s, the next death starts a new one.
    assert backoff.next_delay_s(uptime_s=59) == 16
    assert backoff.next_delay_s(uptime_s=60) == 1
    assert (backoff.attempt, backoff.restarts) == (1, 6)  # the count of restarts is never reset


def test_policies_are_independent_per_service() -> None:
    gateway, worker = Backoff(), Backoff()
    worker.next_delay_s(uptime_s=1)
    worker.next_delay_s(uptime_s=1)
    assert gateway.next_delay_s(uptime_s=1) == 1
    assert (gateway.restarts, worker.restarts) == (1, 2)


def test_workers_each_get_a_metrics_port_and_a_banner_line() -> None:
    config = UpConfig.from_env({"WORKERS": "3", "WORKER_METRICS_PORT": "9200"})
    assert config.worker_names() == ["worker-1", "worker-2", "worker-3"]
    planned = [(port, what, var) for port, what, var in config.ports() if what.startswith("worker")]
    assert planned == [
        (9200, "worker-1 metrics", "WORKER_METRICS_PORT"),
        (9201, "worker-2 metrics", "WORKER_METRICS_PORT + 1"),
        (9202, "worker-3 metrics", "WORKER_METRICS_PORT + 2"),
    ]
    text = banner(config)
    for port in (9200, 9201, 9202):
        assert f"http://127.0.0.1:{port}/metrics" in text
    assert UpConfig.from_env({}).workers == 1


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_worker_count_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match=f"WORKERS must be a positive whole number, got '{raw}'"):
        UpConfig.from_env({"WORKERS": raw})


def test_workers_past_the_last_port_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="past 65535"):
        UpConfig.from_env({"WORKERS": "2", "WORKER_METRICS_PORT": "65535"})
