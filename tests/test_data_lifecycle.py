"""What is kept and for how long: deleting a voice erases everything made from it, and S3 lifecycle
rules expire samples, features and outputs after the configured days."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from stack import Stack, serving

from common.owners import owned_key
from events.state import SharedState
from ops.client import ApiClient
from ops.services.ports import free_port
from storage.keys import FEATURES_PREFIX, OUTPUTS_PREFIX, SAMPLES_PREFIX, features_prefix, sample_key
from storage.objects import ObjectStore, StorageError
from wechat_adapter.app import create_app


async def finished_task(client: ApiClient, voice_id: str, text: str) -> dict:
    reply = await client.synthesize(text, voice_id)
    assert reply.status in (200, 202), reply.body
    task = await client.wait_task(reply.body["task_id"])
    assert task["status"] == "succeeded", task
    return task


async def live_results(state: SharedState, owner: str, voice_id: str) -> list[str]:
    """Keys of the voice's result-cache entries that still hold a record."""
    keys = await state.results.keys(f"{owned_key(owner, voice_id)}.*")
    return [key for key in keys if await state.results.get(key) is not None]


async def test_deleting_a_voice_erases_what_was_made_from_it(stack: Stack) -> None:
    state = SharedState(stack.bus)
    user = await stack.user()
    owner = user.openid or ""
    voice = await stack.ready_voice(user)
    voice_id = voice["voice_id"]
    record = await state.voices.get(owner, voice_id)
    assert record is not None and record.media_trace_id
    text = f"删除之前说一句，{uuid.uuid4().hex[:6]}。"
    task = await finished_task(user, voice_id, text)
    # Asked again, the request is in the result cache: it was put there when first asked, unless that
    # was the stack's very first synthesis (the gateway learns the engine's release from completions).
    await finished_task(user, voice_id, text)
    assert await live_results(state, owner, voice_id)
    features = features_prefix(owner, voice_id)
    for name in ("speaker.npy", "tokens/prompt.bin"):  # as an engine caching features would leave them
        await stack.store.put(features + name, b"features", "application/octet-stream")

    deleted = await user.request("DELETE", f"/v1/voices/{voice_id}")

    assert deleted.status == 204
    assert (await user.request("GET", f"/v1/voices/{voice_id}")).status == 404
    assert not await stack.store.exists(sample_key(owner, voice_id))
    assert await stack.store.delete_prefix(features) == 0  # nothing was left under it
    assert await live_results(state, owner, voice_id) == []
    assert await state.media_checks.get(record.media_trace_id) is None
    # Finished tasks keep their audio (delivered already; the lifecycle rule expires it).
    assert (await user.request("GET", task["audio_url"])).status == 200
    # The same recording uploaded again is a new voice, with nothing cached for it.
    again = await stack.ready_voice(user)
    assert (await user.synthesize(text, again["voice_id"])).status == 202


async def test_the_gateway_sets_the_configured_retention(stack: Stack) -> None:
    assert await stack.store.expiry_rules() == {
        SAMPLES_PREFIX: stack.settings.sample_retention_days,
        FEATURES_PREFIX: stack.settings.sample_retention_days,
        OUTPUTS_PREFIX: stack.settings.output_retention_days,
    }
    settings = dataclasses.replace(
        stack.settings,
        s3_bucket=f"voicerelay-retention-{uuid.uuid4().hex[:8]}",
        sample_retention_days=3,
        output_retention_days=2,
    )
    async with serving(create_app(settings), free_port()):
        store = own_store(stack, settings.s3_bucket)
        rules = await store.expiry_rules()
        store.close()
    assert rules == {SAMPLES_PREFIX: 3, FEATURES_PREFIX: 3, OUTPUTS_PREFIX: 2}


def own_store(stack: Stack, bucket: str) -> ObjectStore:
    return ObjectStore.from_settings(dataclasses.replace(stack.settings, s3_bucket=bucket))


@pytest.fixture
async def scratch_store(stack: Stack) -> AsyncIterator[ObjectStore]:
    """A bucket of its own, so changing its lifecycle cannot affect the stack's."""
    store = own_store(stack, f"voicerelay-scratch-{uuid.uuid4().hex[:8]}")
    await store.ensure_bucket()
    yield store
    store.close()


async def test_lifecycle_rules_are_idempotent_and_keep_other_rules(scratch_store: ObjectStore) -> None:
    client, bucket = scratch_store._client, scratch_store.bucket
    operators = Rule(
        ENABLED, rule_filter=Filter(prefix="tmp/"), rule_id="operator-tmp", expiration=Expiration(days=1)
    )
    await asyncio.to_thread(client.set_bucket_lifecycle, bucket, LifecycleConfig([operators]))
    for days in (30, 30, 5):
        await scratch_store.ensure_lifecycle({SAMPLES_PREFIX: days, OUTPUTS_PREFIX: 7})
        assert await scratch_store.expiry_rules() == {SAMPLES_PREFIX: days, OUTPUTS_PREFIX: 7}
    config = await asyncio.to_thread(client.get_bucket_lifecycle, bucket)
    ids = sorted(rule.rule_id for rule in config.rules)
    assert ids == ["operator-tmp", "voicerelay-expire-outputs", "voicerelay-expire-samples"]


async def test_deleting_a_prefix_is_bounded(scratch_store: ObjectStore) -> None:
    prefix = "features/someone/v_1/"
    for i in range(5):
        await scratch_store.put(f"{prefix}{i}.bin", b"x", "application/octet-stream")
    await scratch_store.put("features/someone/v_10/kept.bin", b"x", "application/octet-stream")
    with pytest.raises(StorageError):
        await scratch_store.delete_prefix(prefix, max_objects=3)
    assert await scratch_store.delete_prefix(prefix, max_objects=3) == 2  # a second call finishes
    assert await scratch_store.exists("features/someone/v_10/kept.bin")  # a sibling is not under it
    with pytest.raises(ValueError):
        await scratch_store.delete_prefix("features/someone/v_1")
