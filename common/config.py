"""The one configuration object, read from the environment once per process (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from common.vocabulary import (
    AIGC_LABELS,
    COSYVOICE_TEXT_FRONTENDS,
    ENGINE_NAMES,
    MINIPROGRAM_STATES,
    WECHAT_LANGS,
)

# The emulator's test app. Real deployments override all of these (README "WeChat configuration").
EMULATOR_APPID = "wxvoicerelay0test0"
EMULATOR_SECRET = "voicerelay-emulator-secret"
EMULATOR_PUSH_TOKEN = "voicerelaypushtoken"
EMULATOR_PUSH_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 chars, as WeChat issues them
EMULATOR_TEMPLATE_ID = "voicerelay-finished-template"

# SESSION_SECRET (and SESSION_SECRET_PREVIOUS) must hold at least this many bytes: HMAC and AES-GCM keys
# are derived from it, and a short one can be guessed offline from any token.
MIN_SESSION_SECRET_BYTES = 32
# How the code tells real WeChat from the emulator (or any other stand-in) behind WECHAT_API_BASE.
REAL_WECHAT_HOST = "api.weixin.qq.com"

# AIGC_PRODUCER is the ContentProducer of GB 45438-2025's implicit label: a name or code, kept short.
MAX_AIGC_PRODUCER_CHARS = 64

# LOG_FORMAT: text lines for people (the default) or one JSON object per line for a log collector.
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A configuration value is present but unusable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    nats_urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    # Replicas of the stream, consumers and KV buckets (3 on a three-node cluster). None keeps what
    # exists (1 for a new deployment), so a process started without it never scales a cluster down.
    nats_replicas: int | None = None

    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: str = "voicerelay"
    s3_secret_key: str = "voicerelay-secret"
    s3_bucket: str = "voicerelay"
    s3_secure: bool = False

    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_appid: str = EMULATOR_APPID
    wechat_secret: str = EMULATOR_SECRET
    wechat_push_token: str = EMULATOR_PUSH_TOKEN
    wechat_push_aes_key: str = EMULATOR_PUSH_AES_KEY
    wechat_template_id: str = EMULATOR_TEMPLATE_ID
    wechat_miniprogram_state: str = "developer"
    wechat_timeout_s: float = 5.0
    wechat_lang: str = "zh_CN"
    # Subscription-message template keywords -> task fields; a keyword's type is its name less the digits.
    wechat_template_fields: tuple[tuple[str, str], ...] = (
        ("thing1", "text"),
        ("phrase2", "status"),
        ("character_string3", "task_id"),
        ("time4", "updated_at"),
    )

    # Content security. msgSecCheck's "review" verdict: reject (default) or allow.
    text_review_policy: str = "reject"
    # When WeChat's security APIs cannot be reached: refuse the content (default) or let it through.
    security_fail_open: bool = False
    sensitive_words_file: str | None = None  # None: the list shipped in wechat_adapter/data/
    # A voice whose audio verdict never arrives is decided after this long, by this policy.
    media_review_timeout_s: int = 3600
    media_review_timeout_policy: str = "reject"

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    public_base_url: str = "http://127.0.0.1:8080"
    session_secret: str = ""  # empty: the gateway makes one up (tokens then die with the process)
    # The secret SESSION_SECRET replaced: still accepted on tokens, links and sealed session_keys,
    # never used to sign (wechat_adapter/auth.py). Empty: none.
    session_secret_previous: str = ""
    session_ttl_s: int = 7 * 24 * 3600

    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9108

    tts_engine: str = "espeak"
    cosyvoice_model_dir: str | None = None
    # Upstream's text normalisation (synth_worker/engines/cosyvoice3.py): which frontend, and where
    # wetext's FST files are (the GPU image ships them; a worker never downloads them).
    cosyvoice_text_frontend: str = COSYVOICE_TEXT_FRONTENDS[0]
    cosyvoice_wetext_dir: str | None = None
    # Seconds CosyVoice3 may go without progress (an LLM token or a chunk of audio) before the job fails
    # and is retried, rather than hang the worker (the engine's DEFAULT_STALL_S, cosyvoice_calls.py).
    cosyvoice_stall_s: float = 60.0
    # Serve the LLM with vLLM (upstream's load_vllm: batched LLM decoding, GPU only, vllm in the image).
    cosyvoice_vllm: bool = False
    # China's AIGC labelling rules (synth_worker/labels.py): the audible label every output carries,
    # and the provider named in every output's implicit (metadata) label.
    aigc_explicit_label: str = AIGC_LABELS[0]
    aigc_producer: str = "VoiceRelay"

    rate_limit_per_minute: int = 3
    uploads_per_hour: int = 20
    # Logins per client address per minute: generous, for a household or a campus behind one NAT.
    logins_per_minute: int = 30
    voices_per_user: int = 20
    streams_per_user: int = 5
    # Backpressure: refuse new syntheses (503 overloaded) while this many jobs wait for a worker.
    queue_max_pending: int = 1000
    # Browser origins allowed to call the API (the H5 page); the mini program needs none.
    cors_origins: tuple[str, ...] = ()
    # S3 lifecycle: samples and outputs expire after this many days.
    sample_retention_days: int = 30
    output_retention_days: int = 7
    # Extra seconds added to every synthesis: stands in for a GPU engine's time in benchmarks and
    # fault tests with the fast CPU engine. Always 0 in production.
    engine_delay_s: float = 0.0
    text_max_chars: int = 200
    upload_max_bytes: int = 5 * 1024 * 1024
    audit_max_age_s: int = 30 * 24 * 3600
    log_level: str = "INFO"
    log_format: str = LOG_FORMATS[0]

    @property
    def output_max_age_s(self) -> float:
        """OUTPUT_RETENTION_DAYS in seconds: how long outputs, their tasks and cached results live."""
        return self.output_retention_days * 86400.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; unset ones keep their local default."""
        env = os.environ if environ is None else environ
        d = cls()

        def text(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        def integer(name: str, default: int, minimum: int = 0) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
            if value < minimum:
                raise ConfigError(f"{name} must be >= {minimum}, got {value}")
            return value

        def boolean(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw in {"1", "true", "yes", "on"}:
                return True
            if raw in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"{name} must be true or false, got {raw!r}")

        aes_key = env.get("WECHAT_PUSH_AES_KEY", d.wechat_push_aes_key).strip()
        if aes_key and len(aes_key) != 43:
            raise ConfigError("WECHAT_PUSH_AES_KEY must be the 43-character EncodingAESKey (or empty)")
        state = text("WECHAT_MINIPROGRAM_STATE", d.wechat_miniprogram_state)
        if state not in MINIPROGRAM_STATES:
            raise ConfigError("WECHAT_MINIPROGRAM_STATE must be formal, trial or developer")
        text_review_policy = text("TEXT_REVIEW_POLICY", d.text_review_policy)
        if text_review_policy not in {"reject", "allow"}:
            raise ConfigError("TEXT_REVIEW_POLICY must be reject or allow")
        media_timeout_policy = text("MEDIA_REVIEW_TIMEOUT_POLICY", d.media_review_timeout_policy)
        if media_timeout_policy not in {"reject", "accept"}:
            raise ConfigError("MEDIA_REVIEW_TIMEOUT_POLICY must be reject or accept")
        lang = text("WECHAT_LANG", d.wechat_lang)
        if lang not in WECHAT_LANGS:
            raise ConfigError(f"WECHAT_LANG must be one of {', '.join(WECHAT_LANGS)}, got {lang!r}")
        log_format = text("LOG_FORMAT", d.log_format)
        if log_format not in LOG_FORMATS:
            raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")
        engine = text("TTS_ENGINE", d.tts_engine)
        if engine not in ENGINE_NAMES:
            raise ConfigError("TTS_ENGINE must be espeak or cosyvoice3")
        text_frontend = text("COSYVOICE_TEXT_FRONTEND", d.cosyvoice_text_frontend)
        if text_frontend not in COSYVOICE_TEXT_FRONTENDS:
            frontends = ", ".join(COSYVOICE_TEXT_FRONTENDS)
            raise ConfigError(f"COSYVOICE_TEXT_FRONTEND must be one of {frontends}, got {text_frontend!r}")
        aigc_label = text("AIGC_EXPLICIT_LABEL", d.aigc_explicit_label)
        if aigc_label not in AIGC_LABELS:
            labels = ", ".join(AIGC_LABELS)
            raise ConfigError(f"AIGC_EXPLICIT_LABEL must be one of {labels}, got {aigc_label!r}")
        aigc_producer = text("AIGC_PRODUCER", d.aigc_producer)
        if len(aigc_producer) > MAX_AIGC_PRODUCER_CHARS:
            raise ConfigError(f"AIGC_PRODUCER must be at most {MAX_AIGC_PRODUCER_CHARS} characters")

        session_secret = env.get("SESSION_SECRET", "").strip()
        session_secret_previous = env.get("SESSION_SECRET_PREVIOUS", "").strip()
        check_session_secrets(session_secret, session_secret_previous)

        endpoint, secure_from_url = _split_s3_endpoint(text("S3_ENDPOINT", d.s3_endpoint))
        gateway_port = integer("GATEWAY_PORT", d.gateway_port, minimum=1)

        return cls(
            nats_urls=tuple(
                u.strip() for u in text("NATS_URL", ",".join(d.nats_urls)).split(",") if u.strip()
            ),
            nats_replicas=integer("NATS_REPLICAS", 0, minimum=0) or None,
            s3_endpoint=endpoint,
            s3_access_key=text("S3_ACCESS_KEY", d.s3_access_key),
            s3_secret_key=text("S3_SECRET_KEY", d.s3_secret_key),
            s3_bucket=text("S3_BUCKET", d.s3_bucket),
            s3_secure=boolean("S3_SECURE", secure_from_url if secure_from_url is not None else d.s3_secure),
            wechat_api_base=text("WECHAT_API_BASE", d.wechat_api_base).rstrip("/"),
            wechat_appid=text("WECHAT_APPID", d.wechat_appid),
            wechat_secret=text("WECHAT_SECRET", d.wechat_secret),
            wechat_push_token=text("WECHAT_PUSH_TOKEN", d.wechat_push_token),
            wechat_push_aes_key=aes_key,
            wechat_template_id=text("WECHAT_TEMPLATE_ID", d.wechat_template_id),
            wechat_miniprogram_state=state,
            wechat_lang=lang,
            wechat_template_fields=_template_fields(
                env.get("WECHAT_TEMPLATE_FIELDS", ""), d.wechat_template_fields
            ),
            text_review_policy=text_review_policy,
            security_fail_open=boolean("SECURITY_FAIL_OPEN", d.security_fail_open),
            sensitive_words_file=env.get("SENSITIVE_WORDS_FILE", "").strip() or None,
            media_review_timeout_s=integer("MEDIA_REVIEW_TIMEOUT_S", d.media_review_timeout_s, minimum=1),
            media_review_timeout_policy=media_timeout_policy,
            gateway_host=text("GATEWAY_HOST", d.gateway_host),
            gateway_port=gateway_port,
            public_base_url=text("PUBLIC_BASE_URL", f"http://127.0.0.1:{gateway_port}").rstrip("/"),
            session_secret=session_secret,
            session_secret_previous=session_secret_previous,
            worker_metrics_host=text("WORKER_METRICS_HOST", d.worker_metrics_host),
            worker_metrics_port=integer("WORKER_METRICS_PORT", d.worker_metrics_port, minimum=1),
            tts_engine=engine,
            cosyvoice_model_dir=env.get("COSYVOICE_MODEL_DIR", "").strip() or None,
            cosyvoice_text_frontend=text_frontend,
            cosyvoice_wetext_dir=env.get("COSYVOICE_WETEXT_DIR", "").strip() or None,
            cosyvoice_stall_s=_positive_float(
                "COSYVOICE_STALL_S", env.get("COSYVOICE_STALL_S", ""), d.cosyvoice_stall_s
            ),
            cosyvoice_vllm=boolean("COSYVOICE_VLLM", d.cosyvoice_vllm),
            aigc_explicit_label=aigc_label,
            aigc_producer=aigc_producer,
            rate_limit_per_minute=integer("RATE_LIMIT_PER_MINUTE", d.rate_limit_per_minute, minimum=1),
            uploads_per_hour=integer("UPLOADS_PER_HOUR", d.uploads_per_hour, minimum=1),
            logins_per_minute=integer("LOGINS_PER_MINUTE", d.logins_per_minute, minimum=1),
            voices_per_user=integer("VOICES_PER_USER", d.voices_per_user, minimum=1),
            streams_per_user=integer("STREAMS_PER_USER", d.streams_per_user, minimum=1),
            queue_max_pending=integer("QUEUE_MAX_PENDING", d.queue_max_pending, minimum=1),
            cors_origins=tuple(
                o.strip().rstrip("/") for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()
            ),
            sample_retention_days=integer("SAMPLE_RETENTION_DAYS", d.sample_retention_days, minimum=1),
            output_retention_days=integer("OUTPUT_RETENTION_DAYS", d.output_retention_days, minimum=1),
            engine_delay_s=_non_negative_float("ENGINE_DELAY_S", env.get("ENGINE_DELAY_S", "")),
            text_max_chars=integer("TEXT_MAX_CHARS", d.text_max_chars, minimum=1),
            log_level=text("LOG_LEVEL", d.log_level).upper(),
            log_format=log_format,
        )

    def to_env(self) -> dict[str, str]:
        """Every variable `from_env` reads, rendered so that `Settings.from_env(s.to_env()) == s`.

        For a child process that must run with these settings: lay it over the parent's environment
        (`{**os.environ, **settings.to_env()}`) and nothing of the parent's settings is left, since an
        unset value is rendered as the empty string, which `from_env` reads as unset. Fields that
        `from_env` does not read (session_ttl_s, wechat_timeout_s, upload_max_bytes, audit_max_age_s)
        are not in it: a child always gets their defaults.
        """

        def flag(value: bool) -> str:
            return "true" if value else "false"

        return {
            "NATS_URL": ",".join(self.nats_urls),
            "NATS_REPLICAS": "" if self.nats_replicas is None else str(self.nats_replicas),
            "S3_ENDPOINT": self.s3_endpoint,
            "S3_ACCESS_KEY": self.s3_access_key,
            "S3_SECRET_KEY": self.s3_secret_key,
            "S3_BUCKET": self.s3_bucket,
            "S3_SECURE": flag(self.s3_secure),
            "WECHAT_API_BASE": self.wechat_api_base,
            "WECHAT_APPID": self.wechat_appid,
            "WECHAT_SECRET": self.wechat_secret,
            "WECHAT_PUSH_TOKEN": self.wechat_push_token,
            "WECHAT_PUSH_AES_KEY": self.wechat_push_aes_key,
            "WECHAT_TEMPLATE_ID": self.wechat_template_id,
            "WECHAT_MINIPROGRAM_STATE": self.wechat_miniprogram_state,
            "WECHAT_LANG": self.wechat_lang,
            "WECHAT_TEMPLATE_FIELDS": ",".join(f"{k}={v}" for k, v in self.wechat_template_fields),
            "TEXT_REVIEW_POLICY": self.text_review_policy,
            "SECURITY_FAIL_OPEN": flag(self.security_fail_open),
            "SENSITIVE_WORDS_FILE": self.sensitive_words_file or "",
            "MEDIA_REVIEW_TIMEOUT_S": str(self.media_review_timeout_s),
            "MEDIA_REVIEW_TIMEOUT_POLICY": self.media_review_timeout_policy,
            "GATEWAY_HOST": self.gateway_host,
            "GATEWAY_PORT": str(self.gateway_port),
            "PUBLIC_BASE_URL": self.public_base_url,
            "SESSION_SECRET": self.session_secret,
            "SESSION_SECRET_PREVIOUS": self.session_secret_previous,
            "WORKER_METRICS_HOST": self.worker_metrics_host,
            "WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "TTS_ENGINE": self.tts_engine,
            "COSYVOICE_MODEL_DIR": self.cosyvoice_model_dir or "",
            "COSYVOICE_TEXT_FRONTEND": self.cosyvoice_text_frontend,
            "COSYVOICE_WETEXT_DIR": self.cosyvoice_wetext_dir or "",
            "COSYVOICE_STALL_S": str(self.cosyvoice_stall_s),
            "COSYVOICE_VLLM": flag(self.cosyvoice_vllm),
            "AIGC_EXPLICIT_LABEL": self.aigc_explicit_label,
            "AIGC_PRODUCER": self.aigc_producer,
            "RATE_LIMIT_PER_MINUTE": str(self.rate_limit_per_minute),
            "UPLOADS_PER_HOUR": str(self.uploads_per_hour),
            "LOGINS_PER_MINUTE": str(self.logins_per_minute),
            "VOICES_PER_USER": str(self.voices_per_user),
            "STREAMS_PER_USER": str(self.streams_per_user),
            "QUEUE_MAX_PENDING": str(self.queue_max_pending),
            "CORS_ORIGINS": ",".join(self.cors_origins),
            "SAMPLE_RETENTION_DAYS": str(self.sample_retention_days),
            "OUTPUT_RETENTION_DAYS": str(self.output_retention_days),
            "ENGINE_DELAY_S": str(self.engine_delay_s),
            "TEXT_MAX_CHARS": str(self.text_max_chars),
            "LOG_LEVEL": self.log_level,
            "LOG_FORMAT": self.log_format,
        }

    @property
    def uses_real_wechat(self) -> bool:
        """Whether WECHAT_API_BASE is WeChat itself rather than the emulator or another stand-in."""
        return REAL_WECHAT_HOST in self.wechat_api_base

    def redacted(self) -> dict[str, object]:
        """The settings as a dict with every secret masked, for logs and `ops doctor`."""
        hidden = {
            "s3_secret_key",
            "wechat_secret",
            "wechat_push_token",
            "wechat_push_aes_key",
            "session_secret",
            "session_secret_previous",
        }
        return {
            f.name: ("***" if f.name in hidden and getattr(self, f.name) else getattr(self, f.name))
            for f in dataclasses.fields(self)
        }


def check_session_secrets(current: str, previous: str = "") -> None:
    """Refuse a SESSION_SECRET or SESSION_SECRET_PREVIOUS shorter than MIN_SESSION_SECRET_BYTES.

    An empty SESSION_SECRET is allowed (the gateway then makes one up per process); a previous secret
    without a current one is not, since nothing would sign new tokens with the secret it replaced.
    """
    for name, value in (("SESSION_SECRET", current), ("SESSION_SECRET_PREVIOUS", previous)):
        if value and len(value.encode()) < MIN_SESSION_SECRET_BYTES:
            raise ConfigError(
                f"{name} must be at least {MIN_SESSION_SECRET_BYTES} bytes, got {len(value.encode())}: "
                "generate one with python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    if previous and not current:
        raise ConfigError("SESSION_SECRET_PREVIOUS is set but SESSION_SECRET is not: set the new secret too")


def _non_negative_float(name: str, raw: str) -> float:
    if not raw.strip():
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be >= 0")
    return value


def _positive_float(name: str, raw: str, default: float) -> float:
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):  # nan and inf too: a wait must end
        raise ConfigError(f"{name} must be a number of seconds > 0, got {raw!r}")
    return value


def _template_fields(raw: str, default: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """`thing1=text,phrase2=status,…` (keyword=task field) as pairs; empty keeps the default."""
    if not raw.strip():
        return default
    pairs = []
    for item in raw.split(","):
        keyword, sep, field = (part.strip() for part in item.partition("="))
        if not sep or not keyword or not field:
            raise ConfigError(f"WECHAT_TEMPLATE_FIELDS: expected keyword=field, got {item!r}")
        pairs.append((keyword, field))
    return tuple(pairs)


def _split_s3_endpoint(value: str) -> tuple[str, bool | None]:
    """Accept `host:port` (what the minio SDK wants) or a URL; a URL's scheme decides TLS."""
    if "://" not in value:
        return value, None
    parts = urlsplit(value)
    if not parts.netloc:
        raise ConfigError(f"S3_ENDPOINT is not a usable URL: {value!r}")
    return parts.netloc, parts.scheme == "https"
