"""`python -m ops replay --redrive`: a failed task runs again from its original request, exactly once."""

from __future__ import annotations

import uuid

import msgspec
from stack import Stack
from test_ops_cli import run_ops, stack_env

from events import names
from events.envelope import utc_now_iso
from events.names import EventType
from events.records import ErrorInfo, TaskRecord, TaskStatus, VoiceRecord, VoiceStatus
from events.replay import task_timeline
from events.state import SharedState
from events.task_events import completed_event, failed_event, requested_event
from ops.client import eventually
from ops.samples import speech_sample
from storage.keys import sample_key


async def failed_task(stack: Stack, state: SharedState) -> TaskRecord:
    """A task that failed for a passing reason, its request still in the stream and its sample in S3."""
    owner, now = f"o{uuid.uuid4().hex[:27]}", utc_now_iso()
    voice = VoiceRecord(
        voice_id="v_x", owner=owner, name="n", status=VoiceStatus.READY, duration_s=5, prompt_text="p",
        created_at=now, sample_key=sample_key(owner, "v_x"), audio_sha256="h",
    )  # fmt: skip
    await stack.store.put(voice.sample_key, speech_sample("wav"), "audio/wav")
    task = TaskRecord(
        task_id=f"t_{uuid.uuid4().hex[:26]}", owner=owner, status=TaskStatus.FAILED, text="再来一次",
        voice_id="v_x", mode="zero_shot", format="mp3", trace_id=f"tr_redrive{uuid.uuid4().hex[:8]}",
        created_at=now, updated_at=now, error=ErrorInfo("synthesis_failed", "暂时失败"),
    )  # fmt: skip
    await state.tasks.create(f"{owner}.{task.task_id}", task)
    # The worker takes this job and, the task being final already, acks it without work.
    await stack.bus.publish(requested_event(task, voice, await state.user_keys.key_for(task.owner)))

    async def worker_idle() -> bool:
        info = await stack.bus.js.consumer_info(names.STREAM, names.WORKER_CONSUMER)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(worker_idle)
    return task


async def test_redrive_runs_a_failed_task_once(stack: Stack) -> None:
    state = SharedState(stack.bus)
    task = await failed_task(stack, state)
    env = stack_env(stack)

    code, output = await run_ops("replay", "--redrive", "--task", task.task_id, "--dry-run", env=env)
    assert code == 0, output
    assert f"{task.task_id}  would redrive (#1, failed with synthesis_failed)" in output
    code, output = await run_ops("replay", "--redrive", "--since", "10m", "--dry-run", env=env)
    assert code == 0 and f"{task.task_id}  would redrive (#1" in output, output
    assert (await state.tasks.get(task.owner, task.task_id)).status == TaskStatus.FAILED

    code, output = await run_ops("replay", "--redrive", "--task", task.task_id, env=env)
    assert code == 0, output
    assert f"{task.task_id}  redriven (#1, failed with synthesis_failed)" in output

    async def finished() -> TaskRecord | None:
        record = await state.tasks.get(task.owner, task.task_id)
        return record if record.status.is_final else None

    done = await eventually(finished, timeout_s=30)
    assert done.status == TaskStatus.SUCCEEDED and done.error is None and done.audio_key

    code, output = await run_ops("replay", "--redrive", "--task", task.task_id, env=env)
    assert code == 0, output
    assert f"{task.task_id}  nothing to do: the task is succeeded" in output

    timeline = await task_timeline(stack.bus, task.task_id)
    types = [event.type for event in timeline]
    assert types == [
        EventType.SYNTHESIS_REQUESTED,
        EventType.SYNTHESIS_REDRIVEN,
        EventType.SYNTHESIS_REQUESTED,
        EventType.SYNTHESIS_STARTED,
        EventType.SYNTHESIS_COMPLETED,
    ], types
    redriven = timeline[1]
    assert redriven.data["redrive"] == 1 and redriven.data["by"] == "ops"
    assert timeline[2].id == f"{task.task_id}.requested.redrive1"
    assert {event.trace_id for event in timeline} == {task.trace_id}


async def test_redrive_of_an_unknown_task_says_so(stack: Stack) -> None:
    code, output = await run_ops("replay", "--redrive", "--task", "t_doesnotexist", env=stack_env(stack))
    assert code == 0, output
    assert "t_doesnotexist  skipped: no tts.synthesis.requested in the stream" in output


async def test_redrive_options_only_go_together(stack: Stack) -> None:
    code, output = await run_ops("replay", "--task", "t_x", env=stack_env(stack))
    assert code == 2 and "go with --redrive" in output


def test_a_redriven_tasks_events_have_new_ids() -> None:
    """Within the stream's 2-minute duplicate window, a redriven task failing (or succeeding) again
    must not publish under its previous run's event ids, or the stream would drop the new events."""
    task = TaskRecord(
        task_id="t_x", owner="o_x", status=TaskStatus.FAILED, text="t", voice_id="v_x", mode="zero_shot",
        format="mp3", trace_id="tr", created_at="", updated_at="",
    )  # fmt: skip
    error = ErrorInfo("synthesis_failed", "m")
    again = msgspec.structs.replace(task, redrives=1)
    assert failed_event(task, error).id == "t_x.failed"
    assert failed_event(again, error).id == "t_x.failed.r1"
    assert completed_event(again, {}).id == "t_x.completed.r1"
