"""Bearer sessions: logging out revokes one token everywhere, a login WeChat refuses as high-risk
revokes every session of the user whose token came with it, SESSION_SECRET rotates through
SESSION_SECRET_PREVIOUS, and the gateway refuses a short secret or a review timeout its records
do not outlive."""

from __future__ import annotations

import uuid

import nats.errors
import pytest
from stack import Stack, another_gateway

from common.config import ConfigError, Settings
from events import names
from events.bus import KV_BUCKETS
from ops.client import ApiClient, eventually
from wechat_adapter.app import create_app
from wechat_adapter.auth import (
    REVOCATION_CACHE_S,
    ResourceLinks,
    SessionKeyVault,
    SessionRevocationCheck,
    SessionTokens,
    TokenClaims,
)
from wechat_adapter.errors import ApiError

OLD_SECRET = "the-old-session-secret-32-bytes-long"
NEW_SECRET = "the-new-session-secret-32-bytes-long"
EMULATED = "http://127.0.0.1:8090"
OWNER = "o" + "A" * 27
WEEK_S = 7 * 24 * 3600


async def status_of(client: ApiClient, base_url: str = "") -> tuple[int, str | None]:
    """An authenticated call's status and error code, on the stack's gateway or on `base_url`."""
    reply = await client.request("GET", f"{base_url}/v1/voices" if base_url else "/v1/voices")
    return reply.status, reply.error_code


async def same_user_twice(stack: Stack) -> tuple[str, ApiClient, ApiClient]:
    """Two sessions (two logins, two tokens) of one user, and the emulator's name of that user."""
    name = f"twice-{uuid.uuid4().hex[:8]}"
    first, second = await stack.user(name), await stack.user(name)
    assert first.openid == second.openid and first.token != second.token
    return name, first, second


# --- logout ----------------------------------------------------------------------------------------------


async def test_logout_revokes_this_token_only_and_on_every_gateway(stack: Stack) -> None:
    _, first, second = await same_user_twice(stack)
    async with another_gateway(stack) as (other_url, _):
        assert await status_of(first, other_url) == (200, None)  # that instance has it cached now
        reply = await first.request("DELETE", "/v1/session")
        assert (reply.status, reply.body) == (204, b"")
        assert await status_of(first) == (401, "unauthorized")  # at once where it was revoked
        assert (await first.request("DELETE", "/v1/session")).status == 401

        # Elsewhere once that instance's short cache of the session has run out.
        async def refused_there() -> bool:
            return await status_of(first, other_url) == (401, "unauthorized")

        await eventually(refused_there, timeout_s=REVOCATION_CACHE_S + 5, interval_s=0.5)
        assert await status_of(second) == (200, None)
        assert await status_of(second, other_url) == (200, None)


async def test_logout_needs_a_bearer_token(stack: Stack) -> None:
    reply = await stack.client().request("DELETE", "/v1/session")
    assert (reply.status, reply.error_code) == (401, "unauthorized")


# --- a high-risk login revokes the user's sessions -------------------------------------------------------


async def test_a_high_risk_login_revokes_every_session_of_the_user_whose_token_came(stack: Stack) -> None:
    name, first, second = await same_user_twice(stack)
    bystander = await stack.user()
    # WeChat's 40226 names no openid: the token sent with the login says who it is.
    refused = await first.request("POST", "/v1/session", json={"code": f"risky:{uuid.uuid4().hex}"})
    assert (refused.status, refused.error_code) == (403, "login_forbidden")
    assert await status_of(first) == (401, "unauthorized")
    assert await status_of(second) == (401, "unauthorized")
    assert await status_of(bystander) == (200, None)
    # Once WeChat lets the user in again, the new session is good.
    again = stack.client()
    assert (await again.login(f"{name}:{uuid.uuid4().hex[:8]}")).status == 200
    assert again.openid == first.openid
    assert await status_of(again) == (200, None)


async def test_a_high_risk_login_without_a_token_revokes_nothing(stack: Stack) -> None:
    user = await stack.user()
    refused = await stack.client().login(f"risky:{uuid.uuid4().hex}")
    assert (refused.status, refused.error_code) == (403, "login_forbidden")
    assert await status_of(user) == (200, None)


# --- SESSION_SECRET rotation -----------------------------------------------------------------------------


def test_a_token_of_the_previous_secret_verifies_while_it_is_configured_as_previous() -> None:
    old = SessionTokens(OLD_SECRET, ttl_s=WEEK_S).issue(OWNER)
    rotated = SessionTokens(NEW_SECRET, ttl_s=WEEK_S, previous_secret=OLD_SECRET)
    claims = rotated.verify(old)
    assert claims is not None and claims.owner == OWNER
    assert SessionTokens(NEW_SECRET, ttl_s=WEEK_S).verify(old) is None  # the previous secret dropped
    new = rotated.issue(OWNER)
    assert new.split("~")[0] != old.split("~")[0], "each token names the key that signed it"
    assert SessionTokens(OLD_SECRET, ttl_s=WEEK_S).verify(new) is None  # signed with the new one
    assert SessionTokens(NEW_SECRET, ttl_s=WEEK_S).verify(new) is not None
    # A token naming the previous key id but forged with another secret is still refused.
    forged = old.split("~")[0] + "~" + SessionTokens(NEW_SECRET, ttl_s=WEEK_S).issue(OWNER).split("~")[1]
    assert rotated.verify(forged) is None
    # Links and sealed session_keys of the previous secret survive the rotation too.
    link = ResourceLinks(OLD_SECRET).sign("task-audio", OWNER, "t1")
    assert ResourceLinks(NEW_SECRET, previous_secret=OLD_SECRET).verify(link, "task-audio", max_age_s=60)
    assert ResourceLinks(NEW_SECRET).verify(link, "task-audio", max_age_s=60) is None
    sealed = SessionKeyVault(OLD_SECRET).seal("session-key", OWNER)
    assert SessionKeyVault(NEW_SECRET, previous_secret=OLD_SECRET).open(sealed, OWNER) == "session-key"
    resealed = SessionKeyVault(NEW_SECRET, previous_secret=OLD_SECRET).seal("session-key", OWNER)
    assert SessionKeyVault(NEW_SECRET).open(resealed, OWNER) == "session-key"


async def test_a_rotated_gateway_accepts_old_tokens_only_while_the_old_secret_is_previous(
    stack: Stack,
) -> None:
    user = await stack.user()  # signed with the stack's secret
    current = stack.settings.session_secret
    async with another_gateway(stack, session_secret=NEW_SECRET, session_secret_previous=current) as (url, _):
        assert await status_of(user, url) == (200, None)
        fresh = ApiClient(stack.http, url)
        assert (await fresh.login(f"rotated:{uuid.uuid4().hex[:8]}")).status == 200
        assert await status_of(fresh, url) == (200, None)
        # The stack's own gateway knows no NEW_SECRET.
        assert await status_of(fresh, stack.url) == (401, "unauthorized")
    async with another_gateway(stack, session_secret=NEW_SECRET) as (url, _):
        assert await status_of(user, url) == (401, "unauthorized")


# --- the revocation check: cached, bounded, failing closed -----------------------------------------------


class _Revocations:
    """SessionRevocations without NATS: counts the reads, fails when told to."""

    def __init__(self) -> None:
        self.sessions: set[tuple[str, str]] = set()
        self.until_ms: dict[str, int] = {}
        self.reads = 0
        self.down = False

    async def is_session_revoked(self, owner: str, session_id: str) -> bool:
        self._read()
        return (owner, session_id) in self.sessions

    async def revoked_until_ms(self, owner: str) -> int:
        self._read()
        return self.until_ms.get(owner, 0)

    async def revoke_session(self, owner: str, session_id: str) -> None:
        self.sessions.add((owner, session_id))

    async def revoke_all(self, owner: str, *, issued_until_ms: int) -> None:
        self.until_ms[owner] = issued_until_ms

    def _read(self) -> None:
        self.reads += 1
        if self.down:
            raise nats.errors.TimeoutError


async def test_the_revocation_check_caches_briefly_and_fails_closed() -> None:
    now = [0.0]
    store = _Revocations()
    check = SessionRevocationCheck(store, cache_s=5.0, max_entries=2, clock=lambda: now[0])  # type: ignore
    claims = TokenClaims(OWNER, "s1", issued_ms=1_000)
    assert not await check.is_revoked(claims) and store.reads == 2
    assert not await check.is_revoked(claims) and store.reads == 2  # cached
    store.sessions.add((OWNER, "s1"))  # revoked by another instance
    now[0] = 4.0
    assert not await check.is_revoked(claims)  # ...which this one learns within cache_s of its read
    now[0] = 5.1
    assert await check.is_revoked(claims) and store.reads == 4
    # Its own revocations it knows at once.
    other = TokenClaims(OWNER, "s2", issued_ms=2_000)
    assert not await check.is_revoked(other)
    await check.revoke_all(OWNER)
    assert await check.is_revoked(other)
    # Bounded: with two entries per map, a third session pushes the oldest out.
    for sid in ("s3", "s4", "s5"):
        await check.is_revoked(TokenClaims("o" + sid * 9, sid, issued_ms=1))
    reads = store.reads
    await check.is_revoked(other)
    assert store.reads > reads
    # KV unreachable: refused as unavailable (503), never let through.
    store.down = True
    with pytest.raises(ApiError) as refused:
        await check.is_revoked(TokenClaims(OWNER, "s6", issued_ms=3_000))
    assert refused.value.code == "unavailable"


# --- start-up refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SESSION_SECRET": "short"}, "SESSION_SECRET must be at least 32 bytes, got 5"),
        ({"SESSION_SECRET": "x" * 31}, "SESSION_SECRET must be at least 32 bytes, got 31"),
        ({"SESSION_SECRET": "x" * 32, "SESSION_SECRET_PREVIOUS": "old"}, "SESSION_SECRET_PREVIOUS must be"),
        ({"SESSION_SECRET_PREVIOUS": "p" * 32}, "SESSION_SECRET_PREVIOUS is set but SESSION_SECRET is not"),
    ],
)
def test_settings_refuse_a_short_session_secret(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_settings_take_a_long_enough_secret_or_none() -> None:
    assert Settings.from_env({"SESSION_SECRET": "秘" * 11}).session_secret == "秘" * 11  # 33 bytes
    assert Settings.from_env({}).session_secret == ""  # the gateway makes one up, with a warning


def test_the_gateway_refuses_a_short_session_secret_built_in_code() -> None:
    with pytest.raises(ConfigError, match="SESSION_SECRET must be at least 32 bytes"):
        create_app(Settings(session_secret="test-session-secret", wechat_api_base=EMULATED))
    create_app(Settings(session_secret="", wechat_api_base=EMULATED))  # random per process, as before


def test_the_gateway_refuses_a_review_timeout_that_outlives_the_media_check_record() -> None:
    record_ttl_s = int(KV_BUCKETS[names.MEDIA_CHECKS_BUCKET] or 0)
    base = {"session_secret": "s" * 32, "wechat_api_base": EMULATED}
    with pytest.raises(ConfigError, match="MEDIA_REVIEW_TIMEOUT_S must be at most"):
        create_app(Settings(**base, media_review_timeout_s=record_ttl_s))
    with pytest.raises(ConfigError, match="MEDIA_REVIEW_TIMEOUT_S"):
        create_app(Settings.from_env({"WECHAT_API_BASE": EMULATED, "MEDIA_REVIEW_TIMEOUT_S": "200000"}))
    create_app(Settings(**base, media_review_timeout_s=record_ttl_s - 3600))
    # Revocations outlive every token.
    assert (KV_BUCKETS[names.REVOKED_SESSIONS_BUCKET] or 0) >= Settings().session_ttl_s
