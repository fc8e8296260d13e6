"""Check that the deployment can work: NATS and JetStream, the stream and its consumers (pending,
redelivered, dead letters), the KV buckets, S3 and its lifecycle, the WeChat settings, the engine.

Prints one line per check; exits 1 if any check failed. `--json` for tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Awaitable
from dataclasses import asdict, dataclass

from common.config import EMULATOR_SECRET, Settings
from events import names
from events.bus import CONSUMERS, DEADLETTER_CONSUMERS, KV_BUCKETS, EventBus
from storage.objects import ObjectStore, StorageError
from synth_worker.engines.registry import EngineOptions, probe_engine
from wechat_adapter.wechat.subscribe_message import TemplateMapping

_TIMEOUT_S = 5.0
_APPID = re.compile(r"wx[0-9a-f]{16}")
_PUSH_TOKEN = re.compile(r"[A-Za-z0-9]{3,32}")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the checks as a JSON list")


async def check_jetstream(settings: Settings) -> list[Check]:
    try:
        bus = await asyncio.wait_for(
            EventBus.connect(settings.nats_urls, name="voicerelay-doctor"), _TIMEOUT_S
        )
    except Exception as exc:  # whatever the reason, the answer is "cannot reach NATS"
        return [Check("nats", False, f"cannot connect to {','.join(settings.nats_urls)}: {exc}")]
    checks = [
        Check(
            "nats",
            True,
            f"connected to {bus.nc.connected_url.netloc} (server {bus.nc.connected_server_version})",
        )
    ]
    try:
        stream = await bus.js.stream_info(names.STREAM)
        state = stream.state
        checks.append(
            Check(
                "stream",
                True,
                f"{names.STREAM}: {state.messages} events, {state.bytes} bytes, "
                f"{stream.config.num_replicas} replica(s), kept {stream.config.max_age / 86400:.0f} days",
            )
        )
        for spec in (*CONSUMERS, *DEADLETTER_CONSUMERS):
            info = await bus.js.consumer_info(spec.stream, spec.name)
            checks.append(
                Check(
                    f"consumer {spec.name}",
                    True,
                    f"pending {info.num_pending}, in flight "
                    f"{info.num_ack_pending}, redelivered {info.num_redelivered}",
                )
            )
        for event_type in ("tts.synthesis.failed", "tts.synthesis.deadlettered", "tts.notify.failed"):
            count = (await bus.js.stream_info(names.STREAM, subjects_filter=event_type)).state.subjects or {}
            checks.append(Check(f"events {event_type}", True, f"{count.get(event_type, 0)} recorded"))
        for bucket in KV_BUCKETS:
            status = await (await bus.js.key_value(bucket)).status()
            checks.append(Check(f"kv {bucket}", True, f"{status.values} values"))
    except Exception as exc:  # a missing stream or consumer: the services have not started yet
        checks.append(
            Check("jetstream topology", False, f"{type(exc).__name__}: {exc} (start the gateway once)")
        )
    finally:
        await bus.close()
    return checks


async def check_s3(settings: Settings) -> list[Check]:
    store = ObjectStore.from_settings(settings, timeout_s=_TIMEOUT_S)
    try:
        await store.ping()
        rules = await store.expiry_rules()
    except StorageError as exc:
        return [Check("s3", False, f"{settings.s3_endpoint} bucket {settings.s3_bucket}: {exc}")]
    finally:
        store.close()
    described = [f"{prefix} {days}d" for prefix, days in sorted(rules.items())]
    return [
        Check("s3", True, f"{settings.s3_endpoint} bucket {settings.s3_bucket} reachable"),
        Check(
            "s3 lifecycle",
            bool(described),
            ", ".join(described) or "no expiry rules: samples and outputs are kept forever",
        ),
    ]


def check_wechat(settings: Settings) -> list[Check]:
    real = "api.weixin.qq.com" in settings.wechat_api_base
    problems = []
    if real and not _APPID.fullmatch(settings.wechat_appid):
        problems.append("WECHAT_APPID is not a mini program AppID (wx + 16 hex)")
    if real and settings.wechat_secret in ("", EMULATOR_SECRET):
        problems.append("WECHAT_SECRET is the emulator's")
    if not _PUSH_TOKEN.fullmatch(settings.wechat_push_token):
        problems.append("WECHAT_PUSH_TOKEN must be 3-32 letters or digits")
    if real and not settings.public_base_url.startswith("https://"):
        problems.append("PUBLIC_BASE_URL must be https:// for WeChat (domain whitelist, media_url)")
    if not settings.session_secret:
        problems.append("SESSION_SECRET is not set: tokens die with each gateway process")
    try:
        TemplateMapping.from_pairs(settings.wechat_template_fields)
    except ValueError as exc:
        problems.append(str(exc))
    target = "real WeChat" if real else f"{settings.wechat_api_base} (not real WeChat)"
    mode = "safe mode" if settings.wechat_push_aes_key else "plain mode"
    return [Check("wechat", not problems, "; ".join(problems) or f"{target}, push in {mode}")]


async def check_engine(settings: Settings) -> list[Check]:
    try:
        described = await asyncio.to_thread(
            probe_engine, settings.tts_engine, EngineOptions.from_settings(settings)
        )
    except Exception as exc:  # the engine's own words are the diagnosis
        return [Check("engine", False, f"{settings.tts_engine}: {exc}")]
    return [Check("engine", True, described)]


async def diagnose(settings: Settings) -> list[Check]:
    groups: list[Awaitable[list[Check]]] = [
        check_jetstream(settings),
        check_s3(settings),
        check_engine(settings),
    ]
    results = await asyncio.gather(*groups)
    return [check for group in results for check in group] + check_wechat(settings)


def run(args: argparse.Namespace) -> int:
    checks = asyncio.run(diagnose(Settings.from_env()))
    if args.json:
        print(json.dumps([asdict(c) for c in checks], ensure_ascii=False, indent=2))
    else:
        for check in checks:
            print(f"{'✓' if check.ok else '✗'} {check.name:<34} {check.detail}")
    return 0 if all(c.ok for c in checks) else 1
