"""The subscription message on the real stack: what is sent, what is recorded, what is retried.

`script_error` answers the next calls from anyone, so each scripted test first waits until the
notifier has nothing in hand, and only its own task asks for a notification while the script lasts.
Tests that need a template other than the stack's, or a delivery count JetStream would take minutes
to reach, call a `Notifier` directly: real NATS, KV and emulator, with a stand-in for the message's
ack surface.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from aiohttp import web
from stack import Stack, speech_sample

from common.config import ConfigError
from common.ids import new_id
from common.owners import owned_key
from events import names
from events.bus import EventBus
from events.envelope import Envelope, utc_now_iso
from events.records import ErrorInfo, TaskRecord, TaskStatus
from events.replay import task_timeline
from events.state import SharedState
from events.task_events import completed_event, failed_event
from events.wechat_token import SharedTokenStore
from ops.client import ApiClient, eventually
from ops.services.ports import free_port
from storage.keys import sample_key
from wechat_adapter.app import create_app
from wechat_adapter.metrics import GatewayMetrics
from wechat_adapter.notifier import NOTIFY_RETRY, Notifier, RetryPolicy, refused_field
from wechat_adapter.wechat.api import WeChatClient
from wechat_adapter.wechat.subscribe_message import fit_time, task_page
from wechat_emulator.fields import check_value

TEXT = "你好，你的声音已经准备好了。"

# --- helpers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def member(stack: Stack) -> tuple[ApiClient, dict[str, Any]]:
    """One user with a ready voice, shared by this module's tests."""
    user = await stack.user()
    return user, await stack.ready_voice(user)


def send_calls(stack: Stack, task_id: str) -> list[Any]:
    """subscribe_send calls about this task, whatever they were answered."""
    page = task_page(task_id)
    return [
        c
        for c in stack.emulator.calls
        if c.api == "subscribe_send" and isinstance(c.body, dict) and c.body.get("page") == page
    ]


def messages(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    """Messages the emulator accepted for this task."""
    return [m for m in stack.emulator.sent_messages if m.get("page") == task_page(task_id)]


async def notify_events(stack: Stack, task_id: str) -> list[Envelope]:
    return [e for e in await task_timeline(stack.bus, task_id) if e.type.startswith("tts.notify.")]


async def recorded(stack: Stack, task_id: str) -> Envelope:
    """The one tts.notify.* event of the task, once it is on the stream."""
    [event] = await eventually(lambda: notify_events(stack, task_id))
    return event


async def notifier_idle(stack: Stack) -> None:
    """Wait until the notifier consumer has nothing pending or in hand (nak'ed messages included)."""

    async def idle() -> bool:
        info = await stack.bus.js.consumer_info(names.STREAM, names.NOTIFIER_CONSUMER)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(idle)


async def finished_task(user: ApiClient, voice: dict[str, Any], *, notify: bool = True) -> dict[str, Any]:
    submitted = await user.synthesize(TEXT, voice["voice_id"], notify=notify)
    # 200 when the result cache already holds this text for this voice: it notifies just the same.
    assert submitted.status in (200, 202), submitted.body
    return await user.wait_task(submitted.body["task_id"])


# --- through the whole stack ---------------------------------------------------------------------------


async def test_a_finished_task_sends_one_valid_message_that_opens_the_task(
    stack: Stack, member: tuple[ApiClient, dict[str, Any]]
) -> None:
    user, voice = member
    task = await finished_task(user, voice)
    assert task["status"] == "succeeded", task
    task_id = task["task_id"]

    [message] = await eventually(lambda: messages(stack, task_id))
    assert message["touser"] == user.openid
    assert message["template_id"] == stack.settings.wechat_template_id
    assert message["miniprogram_state"] == stack.settings.wechat_miniprogram_state
    assert message["lang"] == stack.settings.wechat_lang
    data = {key: item["value"] for key, item in message["data"].items()}
    assert data == {
        "thing1": "你好，你的声音已经准备好了。",
        "phrase2": "已完成",
        "character_string3": task_id,
        "time4": fit_time(task["updated_at"]),
    }
    template = stack.emulator.config.template_fields
    assert all(check_value(template[key], value) is None for key, value in data.items())

    # The card opens the task's page, and the page's id is the task, for its owner only.
    page = urlsplit(message["page"])
    assert page.path == "pages/task/task"
    [opened] = parse_qs(page.query)["id"]
    reply = await user.request("GET", f"/v1/syntheses/{opened}")
    assert (reply.status, reply.body["task_id"]) == (200, task_id)
    stranger = await stack.user()
    assert (await stranger.request("GET", f"/v1/syntheses/{opened}")).status == 404

    event = await recorded(stack, task_id)
    assert event.type == "tts.notify.sent"
    assert event.data == {"template_id": stack.settings.wechat_template_id, "attempt": 1}
    assert len(send_calls(stack, task_id)) == 1


async def test_no_message_without_notify(stack: Stack, member: tuple[ApiClient, dict[str, Any]]) -> None:
    user, voice = member
    task = await finished_task(user, voice, notify=False)
    assert task["status"] == "succeeded"
    await notifier_idle(stack)  # it has seen tts.synthesis.completed and acked it
    assert send_calls(stack, task["task_id"]) == []
    assert await notify_events(stack, task["task_id"]) == []


async def test_a_failed_task_notifies_with_its_text_status_and_reason(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    await stack.store.delete(sample_key(user.openid, voice["voice_id"]))  # the worker cannot find it
    task = await finished_task(user, voice)
    assert (task["status"], task["error"]["code"]) == ("failed", "voice_deleted"), task

    [message] = await eventually(lambda: messages(stack, task["task_id"]))
    assert message["data"]["thing1"]["value"] == TEXT  # the text, not the error, under "text"
    assert message["data"]["phrase2"]["value"] == "失败"
    event = await recorded(stack, task["task_id"])
    assert event.type == "tts.notify.sent"
    assert event.data["reason"] == "voice_deleted"
    types = [e.type for e in await task_timeline(stack.bus, task["task_id"])]
    assert types[-2:] == ["tts.synthesis.failed", "tts.notify.sent"]


async def test_a_task_rejected_with_its_voice_notifies(stack: Stack) -> None:
    user = await stack.user()
    stack.emulator.set_media_verdict("risky", "20002")
    stack.emulator.set_media_delay(0.5)
    try:
        upload = await user.upload_voice(speech_sample())
    finally:
        stack.emulator.set_media_verdict("pass", "100")
        stack.emulator.set_media_delay(0.0)
    submitted = await user.synthesize(TEXT, upload.body["voice_id"], notify=True)
    assert submitted.body["status"] == "awaiting_review", submitted.body
    task = await user.wait_task(submitted.body["task_id"])
    assert task["status"] == "rejected", task

    [message] = await eventually(lambda: messages(stack, task["task_id"]))
    assert message["data"]["phrase2"]["value"] == "未通过"
    event = await recorded(stack, task["task_id"])
    assert (event.type, event.data["reason"]) == ("tts.notify.sent", task["error"]["code"])


async def test_user_refusal_43101_is_recorded_once_and_never_retried(
    stack: Stack, member: tuple[ApiClient, dict[str, Any]]
) -> None:
    user, voice = member
    await notifier_idle(stack)
    stack.emulator.script_error("subscribe_send", 43101)
    task = await finished_task(user, voice)
    task_id = task["task_id"]

    event = await recorded(stack, task_id)
    assert event.type == "tts.notify.failed"
    assert (event.data["errcode"], event.data["attempt"]) == (43101, 1)
    assert "refuse" in event.data["errmsg"]
    # Past the consumer's retry delay (2 s) and the notifier's first backoffs (1 s, 2 s): still one call.
    await asyncio.sleep(3.0)
    await notifier_idle(stack)
    assert len(send_calls(stack, task_id)) == 1
    assert messages(stack, task_id) == []
    assert len(await notify_events(stack, task_id)) == 1


async def test_a_refused_field_47003_is_recorded_with_its_name(
    stack: Stack, member: tuple[ApiClient, dict[str, Any]]
) -> None:
    user, voice = member
    await notifier_idle(stack)
    stack.emulator.script_error("subscribe_send", 47003, "argument invalid! data.thing1.value exceeds limit")
    task = await finished_task(user, voice)

    event = await recorded(stack, task["task_id"])
    assert event.type == "tts.notify.failed"
    assert (event.data["errcode"], event.data["field"]) == (47003, "thing1")
    await notifier_idle(stack)
    assert len(send_calls(stack, task["task_id"])) == 1


async def test_wechat_busy_is_retried_with_backoff_and_sent_once(
    stack: Stack, member: tuple[ApiClient, dict[str, Any]]
) -> None:
    user, voice = member
    await notifier_idle(stack)
    # The client retries -1 twice within one call; the third makes the delivery fail and come back.
    stack.emulator.script_error("subscribe_send", -1, times=3)
    task = await finished_task(user, voice)
    task_id = task["task_id"]

    [message] = await eventually(lambda: messages(stack, task_id))
    event = await recorded(stack, task_id)
    assert (event.type, event.data["attempt"]) == ("tts.notify.sent", 2)
    calls = send_calls(stack, task_id)
    assert [c.errcode for c in calls] == [-1, -1, -1, 0]
    assert calls[3].at_s - calls[2].at_s >= 0.9  # the nak delay of the first redelivery
    await notifier_idle(stack)
    assert messages(stack, task_id) == [message]


# --- start-up ----------------------------------------------------------------------------------------------


async def test_a_bad_template_mapping_stops_the_gateway_at_start(stack: Stack) -> None:
    settings = dataclasses.replace(
        stack.settings,
        wechat_template_fields=(("thing1", "text"), ("thing2", "voice_name")),
        gateway_port=free_port(),
    )
    runner = web.AppRunner(create_app(settings))
    with pytest.raises(ConfigError, match=r"'thing2': unknown task field 'voice_name'"):
        await runner.setup()
    await runner.cleanup()


# --- the handler, called directly ---------------------------------------------------------------------


class Delivery:
    """What the notifier uses of a JetStream message: its delivery count and the ack decision."""

    def __init__(self, num_delivered: int) -> None:
        self.metadata = SimpleNamespace(num_delivered=num_delivered)
        self.decisions: list[Any] = []

    async def in_progress(self) -> None:
        pass

    async def ack(self) -> None:
        self.decisions.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.decisions.append(("nak", delay))

    async def term(self) -> None:
        self.decisions.append("term")


@pytest.fixture(scope="module")
async def bus(stack: Stack) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(stack.settings.nats_urls, name="tests-notifier")
    try:
        await bus.ensure_topology(
            audit_max_age_s=stack.settings.audit_max_age_s, output_max_age_s=stack.settings.output_max_age_s
        )
        yield bus
    finally:
        await bus.close()


def direct_notifier(stack: Stack, bus: EventBus, **settings: Any) -> Notifier:
    changed = dataclasses.replace(stack.settings, **settings)
    wechat = WeChatClient(
        stack.http,
        SharedTokenStore(bus.kv(names.WECHAT_BUCKET)),  # the gateway's token, as another instance would
        api_base=changed.wechat_api_base,
        appid=changed.wechat_appid,
        secret=changed.wechat_secret,
        timeout_s=changed.wechat_timeout_s,
    )
    return Notifier(changed, state=SharedState(bus), wechat=wechat, bus=bus, metrics=GatewayMetrics())


async def stored_task(stack: Stack, bus: EventBus, status: TaskStatus, **fields: Any) -> TaskRecord:
    """A finished task of a fresh user, written straight to the tasks bucket (no worker runs it)."""
    owner = stack.emulator.add_user(f"direct-{uuid.uuid4().hex}")
    now = utc_now_iso()
    task = TaskRecord(
        task_id=new_id("t"),
        owner=owner,
        status=status,
        text=TEXT,
        voice_id=new_id("v"),
        mode="zero_shot",
        format="mp3",
        trace_id=new_id("tr"),
        created_at=now,
        updated_at=now,
        **({"notify": True} | fields),
    )
    await SharedState(bus).tasks.put(owned_key(owner, task.task_id), task)
    return task


async def test_a_template_with_a_reason_keyword_shows_why_the_task_failed(
    stack: Stack, bus: EventBus
) -> None:
    error = ErrorInfo("voice_deleted", "声音已被删除，无法合成")
    task = await stored_task(stack, bus, TaskStatus.FAILED, error=error)
    notifier = direct_notifier(
        stack, bus, wechat_template_fields=(("thing1", "reason"), ("phrase2", "status"))
    )
    delivery = Delivery(1)
    await notifier(failed_event(task, error), delivery)  # type: ignore[arg-type]

    assert delivery.decisions == ["ack"]
    [message] = messages(stack, task.task_id)
    assert message["data"] == {"thing1": {"value": "声音已被删除，无法合成"}, "phrase2": {"value": "失败"}}
    event = await recorded(stack, task.task_id)
    assert (event.type, event.data["reason"]) == ("tts.notify.sent", "voice_deleted")


async def test_wechat_unavailable_until_the_last_attempt_is_recorded(stack: Stack, bus: EventBus) -> None:
    task = await stored_task(stack, bus, TaskStatus.SUCCEEDED, duration_s=1.5)
    notifier = direct_notifier(stack, bus)
    await notifier_idle(stack)

    stack.emulator.script_error("subscribe_send", -1, times=3)
    first = Delivery(1)
    await notifier(completed_event(task, {}), first)  # type: ignore[arg-type]
    assert first.decisions == [("nak", 1.0)]  # back to JetStream, nothing recorded yet
    assert await notify_events(stack, task.task_id) == []

    stack.emulator.script_error("subscribe_send", -1, times=3)
    last = Delivery(NOTIFY_RETRY.give_up_after)
    await notifier(completed_event(task, {}), last)  # type: ignore[arg-type]
    assert last.decisions == ["ack"]
    event = await recorded(stack, task.task_id)
    assert event.type == "tts.notify.failed"
    assert (event.data["errcode"], event.data["attempt"]) == ("unavailable", 8)
    assert len(send_calls(stack, task.task_id)) == 6
    assert messages(stack, task.task_id) == []


async def test_a_task_without_notify_or_a_valid_owner_is_not_sent(stack: Stack, bus: EventBus) -> None:
    task = await stored_task(stack, bus, TaskStatus.SUCCEEDED, notify=False)
    notifier = direct_notifier(stack, bus)

    quiet = Delivery(1)
    await notifier(completed_event(task, {}), quiet)  # type: ignore[arg-type]
    assert quiet.decisions == ["ack"]
    nobody = Delivery(1)
    await notifier(msgspec.structs.replace(completed_event(task, {}), openid="../x"), nobody)  # type: ignore[arg-type]
    assert nobody.decisions == ["term"]  # never redelivered: it can never name a task
    assert send_calls(stack, task.task_id) == []
    assert await notify_events(stack, task.task_id) == []


# --- pure parts --------------------------------------------------------------------------------------------


def test_the_backoff_schedule() -> None:
    policy = NOTIFY_RETRY
    assert [policy.delay_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [policy.gives_up(n) for n in (1, 7, 8, 9, 10)] == [False, False, True, True, True]


def test_a_retry_policy_must_leave_a_delivery_to_record_the_failure(stack: Stack) -> None:
    settings = stack.settings
    with pytest.raises(ValueError, match="leaves no delivery"):
        Notifier(
            settings,
            state=None,  # type: ignore[arg-type]
            wechat=None,  # type: ignore[arg-type]
            bus=None,  # type: ignore[arg-type]
            metrics=GatewayMetrics(),
            retry=RetryPolicy(first_delay_s=1.0, max_delay_s=60.0, give_up_after=10),
        )


@pytest.mark.parametrize(
    ("errmsg", "field"),
    [
        ("argument invalid! data.thing1.value exceeds limit rid: 6683da8d-5761cfb6-42f636c2", "thing1"),
        ("argument invalid! data.character_string3.value invalid", "character_string3"),
        ("argument invalid! data.time4 not in template", "time4"),
        ("argument invalid! page invalid", "page"),
        ("argument invalid!", None),
    ],
)
def test_the_refused_field_is_read_from_the_errmsg(errmsg: str, field: str | None) -> None:
    assert refused_field(errmsg) == field
