"""Voice samples: upload (multipart or base64), list, get, listen, delete."""

from __future__ import annotations

import logging

from aiohttp import web

from events.records import VoiceRecord
from storage.objects import ObjectNotFound
from wechat_adapter import enrolment
from wechat_adapter.errors import ApiError
from wechat_adapter.fields import MEDIA_LINK_MAX_AGE_S
from wechat_adapter.http.requests import caller_of, gateway_of, json_response, owner_of
from wechat_adapter.http.uploads import read_upload
from wechat_adapter.views.common import load_owned, voice_json
from wechat_adapter.views.media import serve_object

log = logging.getLogger(__name__)


async def create_voice(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    upload = await read_upload(request, max_bytes=gateway.settings.upload_max_bytes)
    voice = await enrolment.enrol_voice(gateway, caller_of(request), upload)
    return json_response(voice_json(gateway, voice), status=201)


async def load_voice(request: web.Request) -> VoiceRecord:
    return await load_owned(request, gateway_of(request).state.voices, "v", "voice")


async def list_voices(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    voices = await gateway.state.voices.list_for(owner_of(request))
    return json_response({"voices": [voice_json(gateway, v) for v in voices]})


async def get_voice(request: web.Request) -> web.Response:
    return json_response(voice_json(gateway_of(request), await load_voice(request)))


async def voice_audio(request: web.Request) -> web.StreamResponse:
    voice = await load_voice(request)
    return await serve_object(request, voice.sample_key)


async def delete_voice(request: web.Request) -> web.Response:
    gateway, voice = gateway_of(request), await load_voice(request)
    await enrolment.delete_voice(gateway, caller_of(request), voice)
    return web.Response(status=204)


async def media_for_wechat(request: web.Request) -> web.StreamResponse:
    """The sample as WeChat's media checker downloads it, authorised by the signed link alone."""
    gateway = gateway_of(request)
    signed = gateway.links.verify(request.match_info["token"], "media", max_age_s=MEDIA_LINK_MAX_AGE_S)
    if signed is None:
        raise ApiError("not_found", detail="bad or expired media link")
    owner, voice_id = signed
    voice = await gateway.state.voices.get(owner, voice_id)
    if voice is None:
        raise ApiError("not_found", detail=f"voice {voice_id}")
    try:
        return await serve_object(request, voice.sample_key)
    except ObjectNotFound:
        raise ApiError("not_found", detail=voice.sample_key) from None


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/voices", create_voice)
    app.router.add_get("/v1/voices", list_voices)
    app.router.add_get("/v1/voices/{id}", get_voice)
    app.router.add_delete("/v1/voices/{id}", delete_voice)
    app.router.add_get("/v1/voices/{id}/audio", voice_audio, name="voice_audio")
    app.router.add_get("/wechat/media/{token}", media_for_wechat)
