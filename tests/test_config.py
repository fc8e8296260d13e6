"""Settings: `to_env` is the inverse of `from_env`, and the values only Settings knows are checked there."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import pytest

from common.config import ConfigError, Settings
from synth_worker.engines.cosyvoice_calls import DEFAULT_STALL_S

pytestmark = pytest.mark.unit

# Fields from_env does not read: a child process always runs with their defaults.
NOT_FROM_ENV = {"session_ttl_s", "wechat_timeout_s", "upload_max_bytes", "audit_max_age_s"}

# Every field from_env reads, each set to a valid value other than its default.
CHANGED = Settings(
    nats_urls=("nats://10.0.0.1:4222", "nats://10.0.0.2:4222"),
    nats_replicas=3,
    s3_endpoint="s3.example.com:9000",
    s3_access_key="access",
    s3_secret_key="secret",
    s3_bucket="voices",
    s3_secure=True,
    wechat_api_base="http://127.0.0.1:8090",
    wechat_appid="wx0123456789abcdef",
    wechat_secret="app-secret",
    wechat_push_token="pushtoken",
    wechat_push_aes_key="B" * 43,
    wechat_template_id="template-2",
    wechat_miniprogram_state="formal",
    wechat_lang="en_US",
    wechat_template_fields=(("thing5", "reason"), ("phrase6", "status")),
    text_review_policy="allow",
    security_fail_open=True,
    sensitive_words_file="/etc/voicerelay/words.txt",
    media_review_timeout_s=60,
    media_review_timeout_policy="accept",
    gateway_host="0.0.0.0",
    gateway_port=9000,
    public_base_url="https://voice.example.com",
    session_secret="session-secret-of-at-least-32-bytes",
    session_secret_previous="the-previous-session-secret-32-bytes",
    worker_metrics_host="0.0.0.0",
    worker_metrics_port=9200,
    tts_engine="cosyvoice3",
    cosyvoice_model_dir="/models/cosyvoice3",
    cosyvoice_text_frontend="none",
    cosyvoice_wetext_dir="/opt/wetext",
    cosyvoice_stall_s=12.5,
    cosyvoice_vllm=True,
    aigc_explicit_label="rhythm",
    aigc_producer="示例科技 91110000MA00000000",
    rate_limit_per_minute=7,
    uploads_per_hour=9,
    voices_per_user=4,
    logins_per_minute=11,
    streams_per_user=2,
    queue_max_pending=50,
    cors_origins=("https://a.example.com", "https://b.example.com"),
    sample_retention_days=10,
    output_retention_days=3,
    engine_delay_s=0.25,
    text_max_chars=100,
    log_level="DEBUG",
    log_format="json",
)


class _Recording(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def get(self, name: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_defaults_round_trip() -> None:
    assert Settings.from_env(Settings().to_env()) == Settings()
    assert Settings.from_env({}) == Settings()


def test_every_field_changed_round_trips() -> None:
    defaults = Settings()
    unchanged = {
        f.name for f in dataclasses.fields(Settings) if getattr(CHANGED, f.name) == getattr(defaults, f.name)
    }
    assert unchanged == NOT_FROM_ENV, "CHANGED must change every field from_env reads"
    assert Settings.from_env(CHANGED.to_env()) == CHANGED


def test_fields_outside_the_environment_keep_their_defaults() -> None:
    changed = dataclasses.replace(
        CHANGED, session_ttl_s=60, wechat_timeout_s=1.0, upload_max_bytes=1024, audit_max_age_s=3600
    )
    assert Settings.from_env(changed.to_env()) == CHANGED


@pytest.mark.parametrize(
    "changes",
    [
        {"wechat_push_aes_key": ""},  # plain-mode pushes
        {"nats_replicas": 1},
        {"s3_secure": False, "s3_endpoint": "minio:9000"},
        {"cors_origins": ("https://only.example.com",)},
        {"engine_delay_s": 3.0},
    ],
)
def test_edge_values_round_trip(changes: dict[str, object]) -> None:
    settings = dataclasses.replace(CHANGED, **changes)
    assert Settings.from_env(settings.to_env()) == settings


def test_to_env_names_exactly_what_from_env_reads() -> None:
    for settings in (Settings(), CHANGED):
        env = _Recording(settings.to_env())
        Settings.from_env(env)
        assert env.asked == set(settings.to_env())
        assert all(isinstance(value, str) for value in settings.to_env().values())


def test_to_env_over_another_environment_leaves_none_of_its_settings() -> None:
    parent = {**CHANGED.to_env(), "PATH": "/usr/bin"}
    child = {**parent, **Settings().to_env()}
    assert Settings.from_env(child) == Settings()
    assert child["PATH"] == "/usr/bin"


@pytest.mark.parametrize("lang", ["zh_CN", "en_US", "zh_HK", "zh_TW"])
def test_wechat_lang_accepts_what_wechat_does(lang: str) -> None:
    assert Settings.from_env({"WECHAT_LANG": lang}).wechat_lang == lang


@pytest.mark.parametrize("lang", ["en", "fr_FR", "zh-CN"])
def test_wechat_lang_refuses_others(lang: str) -> None:
    with pytest.raises(ConfigError, match="WECHAT_LANG must be one of zh_CN, en_US, zh_HK, zh_TW"):
        Settings.from_env({"WECHAT_LANG": lang})


def test_log_format_is_text_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "text"}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": " json "}).log_format == "json"
    for bad in ("xml", "JSON", "structured"):
        with pytest.raises(ConfigError, match="LOG_FORMAT must be text or json"):
            Settings.from_env({"LOG_FORMAT": bad})


def test_cosyvoice_stall_s_defaults_to_the_engines_and_takes_seconds() -> None:
    assert Settings().cosyvoice_stall_s == DEFAULT_STALL_S
    assert Settings.from_env({"COSYVOICE_STALL_S": " 90 "}).cosyvoice_stall_s == 90.0
    assert Settings.from_env({"COSYVOICE_STALL_S": "0.5"}).cosyvoice_stall_s == 0.5


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "nan", "inf"])
def test_cosyvoice_stall_s_refuses_what_is_not_a_positive_number(bad: str) -> None:
    with pytest.raises(ConfigError, match="COSYVOICE_STALL_S must be a number of seconds"):
        Settings.from_env({"COSYVOICE_STALL_S": bad})


def test_cosyvoice_vllm_is_a_boolean() -> None:
    assert Settings.from_env({}).cosyvoice_vllm is False
    assert Settings.from_env({"COSYVOICE_VLLM": "true"}).cosyvoice_vllm is True
    assert Settings.from_env({"COSYVOICE_VLLM": "0"}).cosyvoice_vllm is False
    with pytest.raises(ConfigError, match="COSYVOICE_VLLM must be true or false"):
        Settings.from_env({"COSYVOICE_VLLM": "maybe"})
