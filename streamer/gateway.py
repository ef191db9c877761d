"""The HTTP + WebRTC front door (aiohttp + aiortc).

Routes (JSON in, JSON out; errors are ``{"error": message}`` with a 4xx status):

- ``POST /v1/calls`` ``{"participants": [names]}`` -> call id, one participant token per
  name, a subscriber token.
- ``POST /v1/calls/{id}/participants`` ``{"name", "token"}`` -> a new participant token
  (any valid token of the call may invite).
- ``POST /v1/calls/{id}/join`` ``{"sdp", "type": "offer", "token"}`` -> the answer.
- ``POST /v1/calls/{id}/leave`` ``{"token"}``; ``POST /v1/calls/{id}/end`` ``{"token"}``
  (participant tokens only: subscribers read and may invite, never end a call).
- ``GET /v1/calls/{id}`` (``Authorization: Bearer``): participants and media offsets.
- ``GET /v1/calls/{id}/emotions?token=&from=``: the call's transcript and emotion events,
  replayed then live, as Server-Sent Events or a WebSocket (:mod:`streamer.subscriptions`).
- ``GET /v1/model``: the model's id, labels and feature spec.
- ``GET /``: the call page (``streamer/web``); ``GET /healthz``, ``/readyz``, ``/metrics``.

Signaling follows aiortc's server example: validate the offer, create the peer
connection, register handlers, answer; a per-connection id in every log line; close on
``failed`` and ``closed``; close everything on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from contracts.events import UtteranceEvent
from streamer.analyzer import SegmentAnalyzer
from streamer.calls import Call, CallRegistry, CallStore, Participant, new_call, new_call_id
from streamer.datachannel import CHANNEL_LABEL, push_emotions
from streamer.ice import restrict_host_addresses, rtc_configuration
from streamer.metrics import StreamerMetrics
from streamer.pipeline import ParticipantPipeline, Speaker
from streamer.publisher import UtterancePublisher
from streamer.settings import StreamerSettings
from streamer.signaling import OfferError, parse_offer
from streamer.subscriptions import serve_subscription
from streamer.tokens import TokenClaims, TokenError, issue_token, verify_token
from streamer.transcripts import TranscriptWriter
from streamer.vad import VadParams

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", StreamerSettings)
METRICS = web.AppKey("metrics", StreamerMetrics)
CALLS = web.AppKey("calls", CallRegistry)
CALL_STORE = web.AppKey("call_store", CallStore)
PUBLISHER = web.AppKey("publisher", UtterancePublisher)
ANALYZER = web.AppKey("analyzer", SegmentAnalyzer)
REDIS = web.AppKey("redis", aioredis.Redis)
TRANSCRIPTS = web.AppKey("transcripts", TranscriptWriter)
WEB_DIR = Path(__file__).resolve().parent / "web"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A client error: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors_and_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON bodies for every error, and CORS headers for allowed origins."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _json_error(exc.status, str(exc))
        except TokenError as exc:
            response = _json_error(exc.status, str(exc))
        except web.HTTPException as exc:
            response = _json_error(exc.status, exc.reason)
    origin = request.headers.get("Origin")
    allowed = request.app[SETTINGS].cors_origins
    if origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Vary"] = "Origin"
    return response


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body must be JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _call(request: web.Request) -> Call:
    call_id = request.match_info["call_id"]
    call = request.app[CALLS].get(call_id)
    if call is None:
        raise ApiError(404, f"unknown call {call_id!r} (never created, or already ended)")
    return call


async def _call_or_restore(request: web.Request, body: dict[str, Any]) -> Call:
    """:func:`_call`, or the call restored from Redis after a restart of this process (only
    for a valid participant token of that call)."""
    with contextlib.suppress(ApiError):
        return _call(request)
    app, call_id = request.app, request.match_info["call_id"]
    try:
        verify_token(app[SETTINGS].secret(), _token(request, body), call_id, "participant")
    except TokenError:
        return _call(request)  # 404: unknown call, as without a record
    call = await app[CALLS].restore(call_id, app[CALL_STORE], app[PUBLISHER].publish)
    return call if call is not None else _call(request)


def _token(request: web.Request, body: dict[str, Any]) -> str | None:
    token = body.get("token")
    if isinstance(token, str):
        return token
    auth = request.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None


def _any_role(request: web.Request, body: dict[str, Any], call_id: str) -> TokenClaims:
    """Verify a token of either role for ``call_id``."""
    token, secret = _token(request, body), request.app[SETTINGS].secret()
    try:
        return verify_token(secret, token, call_id, "participant")
    except TokenError as exc:
        if exc.status == 401:
            raise
        return verify_token(secret, token, call_id, "subscriber")


def _participant_token(app: web.Application, call_id: str, name: str) -> dict[str, str]:
    settings = app[SETTINGS]
    speaker_id = "p-" + secrets.token_urlsafe(6)
    token = issue_token(settings.secret(), call_id, "participant", settings.token_ttl_s,
                        speaker_id=speaker_id, speaker_name=name)
    return {"speaker_id": speaker_id, "name": name, "token": token}


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise ApiError(400, f"a participant name must be a non-empty string of at most 64 characters, "
                            f"not {value!r}")
    return value.strip()


async def create_call(request: web.Request) -> web.Response:
    body = await _body(request)
    names = body.get("participants", [])
    if not isinstance(names, list):
        raise ApiError(400, "'participants' must be a list of names")
    app = request.app
    call_id = new_call_id()
    call = app[CALLS].add(new_call(call_id, app[PUBLISHER].publish, app[CALL_STORE]))
    await app[CALL_STORE].created(call)
    settings = app[SETTINGS]
    log.info("call %s created", call_id)
    return web.json_response({
        "call_id": call_id,
        "participants": [_participant_token(app, call_id, _name(n)) for n in names],
        "subscriber_token": issue_token(settings.secret(), call_id, "subscriber", settings.token_ttl_s),
    }, status=201)


async def add_participant(request: web.Request) -> web.Response:
    call = _call(request)
    body = await _body(request)
    _any_role(request, body, call.call_id)
    return web.json_response(_participant_token(request.app, call.call_id, _name(body.get("name"))),
                             status=201)


async def join(request: web.Request) -> web.Response:
    body = await _body(request)
    call = await _call_or_restore(request, body)
    claims = verify_token(request.app[SETTINGS].secret(), _token(request, body), call.call_id,
                          "participant")
    try:
        offer = parse_offer(body)
    except OfferError as exc:
        raise ApiError(400, str(exc)) from exc
    assert claims.speaker_id is not None
    if claims.speaker_id in call.participants:  # a reconnect replaces the old connection
        log.info("call %s: %s reconnects", call.call_id, claims.speaker_id)
        await call.remove(claims.speaker_id)
    participant = _new_participant(request.app, call, claims)
    pc = participant.pc
    try:
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        await pc.close()
        raise ApiError(400, f"the offer cannot be negotiated: {type(exc).__name__}: {exc}") from exc
    call.participants[claims.speaker_id] = participant
    request.app[METRICS].active_participants.inc()
    log.info("call %s: %s (%s) joined", call.call_id, claims.speaker_id, claims.speaker_name)
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                              "speaker_id": claims.speaker_id})


def _new_participant(app: web.Application, call: Call, claims: TokenClaims) -> Participant:
    """A peer connection wired to a fresh pipeline (tracks, data channel, state changes)."""
    settings = app[SETTINGS]
    assert claims.speaker_id is not None
    speaker = Speaker(call.call_id, claims.speaker_id, claims.speaker_name or claims.speaker_id)
    vad = VadParams(threshold=settings.vad_threshold, min_silence_ms=settings.vad_min_silence_ms,
                    min_speech_ms=settings.vad_min_speech_ms, speech_pad_ms=settings.vad_speech_pad_ms,
                    max_utterance_s=settings.max_utterance_s)
    pipeline = ParticipantPipeline(speaker, call.sequencer, app[ANALYZER], app[METRICS],
                                   call.media_offset_ms, vad, settings.video_sample_fps)
    pc = RTCPeerConnection(rtc_configuration())
    participant = Participant(pipeline=pipeline, pc=pc)
    tag = f"call {call.call_id} {speaker.speaker_id}"

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        log.info("%s: %s track", tag, track.kind)
        pipeline.add_track(track)

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL:
            return
        task = asyncio.create_task(push_emotions(app[REDIS], call.call_id, channel),
                                   name=f"{tag}:emotions")
        participant.tasks.add(task)
        task.add_done_callback(participant.tasks.discard)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("%s: connection %s", tag, pc.connectionState)
        if pc.connectionState in ("failed", "closed") and \
                call.participants.get(speaker.speaker_id) is participant:
            await call.remove(speaker.speaker_id)
            app[METRICS].active_participants.dec()

    return participant


async def leave(request: web.Request) -> web.Response:
    call = _call(request)
    body = await _body(request)
    claims = verify_token(request.app[SETTINGS].secret(), _token(request, body), call.call_id,
                          "participant")
    assert claims.speaker_id is not None
    left = await call.remove(claims.speaker_id)
    if left:
        request.app[METRICS].active_participants.dec()
    return web.json_response({"call_id": call.call_id, "speaker_id": claims.speaker_id,
                              "left": left})


async def end_call(request: web.Request) -> web.Response:
    """Participants may end their call; a subscriber token only reads (and invites)."""
    call = _call(request)
    body = await _body(request)
    verify_token(request.app[SETTINGS].secret(), _token(request, body), call.call_id, "participant")
    participants = len(call.participants)
    ended = await request.app[CALLS].end(call)
    request.app[METRICS].active_participants.dec(participants)
    log.info("call %s ended, last seq %d", call.call_id, ended.last_seq)
    return web.json_response({"call_id": call.call_id, "last_seq": ended.last_seq})


async def describe_call(request: web.Request) -> web.Response:
    call = _call(request)
    _any_role(request, {}, call.call_id)
    return web.json_response(call.describe())


async def subscribe(request: web.Request) -> web.StreamResponse:
    """The call's events for a subscriber (works for ended calls and on any replica)."""
    call_id = request.match_info["call_id"]
    _any_role(request, {"token": request.query.get("token")}, call_id)
    return await serve_subscription(request, request.app[REDIS], call_id)


async def model_card(request: web.Request) -> web.Response:
    return web.json_response(request.app[ANALYZER].model_card)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the broker takes events and Redis answers; 503 with the reasons otherwise."""
    app = request.app
    publisher = app[PUBLISHER]
    checks: dict[str, str] = {"broker": "ok" if publisher.ready else str(publisher.error)}
    try:
        await asyncio.wait_for(app[REDIS].ping(), 2.0)
        checks["redis"] = "ok"
    except (RedisError, OSError, TimeoutError) as exc:
        checks["redis"] = f"redis {app[SETTINGS].masked()['redis_url']} unreachable: {exc!r}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: StreamerSettings, analyzer: SegmentAnalyzer) -> web.Application:
    """The gateway app; ``analyzer`` (models) is built by the caller, once per process."""
    restrict_host_addresses(settings.ice_host_addresses)
    app = web.Application(middlewares=[errors_and_cors])
    metrics_ = StreamerMetrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics_
    app[CALLS] = CallRegistry(metrics_)
    app[ANALYZER] = analyzer
    app[REDIS] = aioredis.Redis.from_url(str(settings.redis_url), socket_connect_timeout=2.0)
    app[TRANSCRIPTS] = TranscriptWriter(app[REDIS], settings.call_stream_maxlen, settings.call_stream_ttl_s)
    app[CALL_STORE] = CallStore(app[REDIS], settings.call_stream_ttl_s)

    def on_published(event: UtteranceEvent) -> None:
        app[TRANSCRIPTS].submit(event)
        app[CALL_STORE].published(event)

    app[PUBLISHER] = UtterancePublisher(settings, metrics_, on_published=on_published)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_post("/v1/calls", create_call)
    app.router.add_get("/v1/calls/{call_id}", describe_call)
    app.router.add_post("/v1/calls/{call_id}/participants", add_participant)
    app.router.add_post("/v1/calls/{call_id}/join", join)
    app.router.add_post("/v1/calls/{call_id}/leave", leave)
    app.router.add_post("/v1/calls/{call_id}/end", end_call)
    app.router.add_get("/v1/calls/{call_id}/emotions", subscribe)
    app.router.add_get("/v1/model", model_card)
    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def _on_startup(app: web.Application) -> None:
    app[PUBLISHER].start()


async def _on_shutdown(app: web.Application) -> None:
    """End every call (flushing speech, publishing CallEnded), then close the clients."""
    for call in app[CALLS]:
        await app[CALLS].end(call, timeout_s=10.0)
    await app[PUBLISHER].close()
    await app[TRANSCRIPTS].drain()
    await app[CALL_STORE].drain()
    await app[REDIS].aclose()

