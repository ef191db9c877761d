"""The HTTP + WebRTC front door (aiohttp + aiortc).

Routes (JSON in, JSON out; errors are ``{"error": message}`` with a 4xx status):

- ``POST /v1/calls`` ``{"participants": [names]}`` -> call id, one participant token per
  name, a subscriber token and an invite token (``CBERL_API_KEY`` set: needs the key).
- ``POST /v1/calls/{id}/participants`` ``{"name", "token"}`` -> a new participant token
  (the call's invite token only: an invite mints participants and does nothing else).
- ``POST /v1/calls/{id}/join`` ``{"sdp", "type": "offer", "token"}`` -> the answer.
- ``POST /v1/calls/{id}/leave`` ``{"token"}``; ``POST /v1/calls/{id}/end`` ``{"token"}``
  (participant tokens only: subscribers only read, never end a call).
- ``GET /v1/calls/{id}`` (``Authorization: Bearer``): participants and media offsets.
- ``GET /v1/calls/{id}/emotions?token=&from=``: the call's transcript and emotion events,
  replayed then live, as Server-Sent Events or a WebSocket (:mod:`streamer.subscriptions`).
- ``GET /v1/model``: the model's id, labels and feature spec.
- ``GET /``: the call page (``streamer/web``); ``GET /healthz``, ``/readyz``, ``/metrics``.

Signaling follows aiortc's server example: validate the offer, create the peer
connection, register handlers, answer; a per-connection id in every log line; close on
``failed`` and ``closed`` (and when not connected within ``connect_timeout_s``); close
everything on shutdown, within ``shutdown_grace_s``.

Every request passes one middleware first: a Host header this gateway is not reached by
is answered 421 (DNS rebinding); CORS headers only for ``cors_origins`` (none by default).
Request bodies must be ``application/json`` (else 415) objects. The abuse limits (API key,
caps on calls, participants, names and subscriptions, clean names) live in
:mod:`streamer.limits`; calls without a participant for ``call_idle_timeout_s`` end.
Two Redis pools: one for writes (transcripts, call keys, readiness), one for the
subscription readers, so open streams cannot starve the write path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from contracts.call_stream import call_key
from contracts.events import UtteranceEvent
from streamer.analyzer import SegmentAnalyzer
from streamer.calls import Call, CallRegistry, CallStore, Participant, new_call, new_call_id
from streamer.capacity import Capacity
from streamer.datachannel import CHANNEL_LABEL, push_emotions
from streamer.ice import restrict_host_addresses, rtc_configuration
from streamer.limits import (
    LimitError,
    SubscriptionLimiter,
    allowed_hosts,
    check_api_key,
    check_invite,
    check_join,
    check_name,
    check_new_call,
)
from streamer.metrics import StreamerMetrics
from streamer.pipeline import ParticipantPipeline, Speaker
from streamer.publisher import UtterancePublisher
from streamer.settings import StreamerSettings
from streamer.signaling import OfferError, parse_offer
from streamer.subscriptions import serve_subscription
from streamer.tokens import Role, TokenClaims, TokenError, issue_token, verify_token
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
"""The write path's pool: transcripts, call keys and records, readiness."""
SUB_REDIS = web.AppKey("sub_redis", aioredis.Redis)
"""The subscription readers' pool (SSE, WebSocket, data channels), apart from :data:`REDIS`."""
LIMITER = web.AppKey("limiter", SubscriptionLimiter)
HOSTS = web.AppKey("hosts", frozenset)
HOUSEKEEPING = web.AppKey("housekeeping", asyncio.Task)
CAPACITY = web.AppKey("capacity", Capacity)
_HOST_EXEMPT = frozenset({"/healthz", "/readyz"})
"""Probes reach the gateway by whatever address the platform uses."""
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
    """The Host check, JSON bodies for every error, and CORS headers for allowed origins."""
    host = request.headers.get("Host", "").lower()
    if request.path not in _HOST_EXEMPT and host not in request.app[HOSTS]:
        return _json_error(421, f"this gateway does not serve host {host[:80]!r} "
                                f"(allowed: {', '.join(sorted(request.app[HOSTS]))})")
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _json_error(exc.status, str(exc))
        except TokenError as exc:
            response = _json_error(exc.status, str(exc))
        except LimitError as exc:
            response = _json_error(exc.status, str(exc))
            if exc.retry_after_s is not None:
                response.headers["Retry-After"] = str(exc.retry_after_s)
        except web.HTTPException as exc:
            response = _json_error(exc.status, exc.reason)
    origin = request.headers.get("Origin")
    allowed = request.app[SETTINGS].cors_origins
    if origin and ("*" in allowed or origin in allowed) and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, X-API-Key"
        response.headers["Vary"] = "Origin"
    return response


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise ApiError(415, f"the request body must be application/json, not {request.content_type[:60]!r}")
    try:
        body = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body must be JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "the request body must be JSON: nested too deeply") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _unknown_call(call_id: str) -> ApiError:
    return ApiError(404, f"unknown call {call_id!r} (never created, or already ended)")


def _call(request: web.Request) -> Call:
    call_id = request.match_info["call_id"]
    call = request.app[CALLS].get(call_id)
    if call is None:
        raise _unknown_call(call_id)
    return call


async def _authorised_call(request: web.Request, body: dict[str, Any],
                           role: Role) -> tuple[Call, TokenClaims]:
    """The URL's call and the claims of the request's verified ``role`` token for it.

    A call this process does not hold is restored from Redis (after a restart of the
    streamer) only for a valid token of it; for any other token it is a 404, as an unknown
    call is, so a probe learns nothing about which calls exist.
    """
    app, call_id = request.app, request.match_info["call_id"]
    secret, token = app[SETTINGS].secret(), _token(request, body)
    call = app[CALLS].get(call_id)
    if call is not None:
        return call, verify_token(secret, token, call_id, role)
    try:
        claims = verify_token(secret, token, call_id, role)
    except TokenError:
        raise _unknown_call(call_id) from None
    check_new_call(app[SETTINGS], app[CALLS], [])  # a restored call counts against the cap
    call = await app[CALLS].restore(call_id, app[CALL_STORE], app[PUBLISHER].publish)
    if call is None:
        raise _unknown_call(call_id)
    await _mark_call(app, call_id)  # workers keep accepting its utterances past the old key's TTL
    return call, claims


def _token(request: web.Request, body: dict[str, Any]) -> str | None:
    token = body.get("token")
    if isinstance(token, str):
        return token
    auth = request.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None


def _reader(request: web.Request, body: dict[str, Any], call_id: str) -> TokenClaims:
    """Verify a token that may read ``call_id`` (participant or subscriber; not an invite)."""
    return verify_token(request.app[SETTINGS].secret(), _token(request, body), call_id,
                        ("participant", "subscriber"))


def _participant_token(app: web.Application, call_id: str, name: str) -> dict[str, str]:
    settings = app[SETTINGS]
    speaker_id = "p-" + secrets.token_urlsafe(6)
    token = issue_token(settings.secret(), call_id, "participant", settings.token_ttl_s,
                        speaker_id=speaker_id, speaker_name=name)
    return {"speaker_id": speaker_id, "name": name, "token": token}


async def _mark_call(app: web.Application, call_id: str) -> None:
    """Set the call's key (:func:`contracts.call_stream.call_key`): workers process only
    utterances of calls that have one. Kept until it expires, so late events still verify."""
    try:
        await app[REDIS].set(call_key(call_id), "1", ex=app[SETTINGS].call_stream_ttl_s)
    except (RedisError, OSError) as exc:
        raise ApiError(503, f"the call cannot be registered: Redis unreachable "
                            f"({type(exc).__name__})") from exc


async def create_call(request: web.Request) -> web.Response:
    """Check everything (key, names, capacity), then register the call and mint its tokens."""
    app = request.app
    settings = app[SETTINGS]
    check_api_key(settings, request.headers)
    body = await _body(request)
    names = check_new_call(settings, app[CALLS], body.get("participants", []))
    app[CAPACITY].admit(max(len(names), 1))  # 503 + Retry-After beyond capacity
    call_id = new_call_id()
    await _mark_call(app, call_id)
    call = app[CALLS].add(new_call(call_id, app[PUBLISHER].publish, app[CALL_STORE]))
    call.seats = len(names)
    await app[CALL_STORE].created(call)
    log.info("call %s created", call_id)
    secret, ttl_s = settings.secret(), settings.token_ttl_s
    return web.json_response({
        "call_id": call_id,
        "participants": [_participant_token(app, call_id, n) for n in names],
        "subscriber_token": issue_token(secret, call_id, "subscriber", ttl_s),
        "invite_token": issue_token(secret, call_id, "invite", ttl_s),
    }, status=201)


async def add_participant(request: web.Request) -> web.Response:
    """Mint a participant token with the call's invite token (and nothing else)."""
    body = await _body(request)
    call, _ = await _authorised_call(request, body, "invite")
    name = check_name(body.get("name"))
    check_invite(request.app[SETTINGS], call.invites_minted)
    call.invites_minted += 1
    request.app[CALL_STORE].invited(call)
    return web.json_response(_participant_token(request.app, call.call_id, name), status=201)


async def join(request: web.Request) -> web.Response:
    body = await _body(request)
    call, claims = await _authorised_call(request, body, "participant")
    try:
        offer = parse_offer(body)
    except OfferError as exc:
        raise ApiError(400, str(exc)) from exc
    assert claims.speaker_id is not None
    check_join(request.app[SETTINGS], call.participants, claims.speaker_id)
    if claims.speaker_id not in call.participants:  # a reconnect is always admitted
        request.app[CAPACITY].admit(1, seated=len(call.participants) < call.seats)
    participant = _new_participant(request.app, call, claims)
    pc = participant.pc
    try:
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        await pc.close()
        raise ApiError(400, f"the offer cannot be negotiated: {type(exc).__name__}: {exc}") from exc
    if claims.speaker_id in call.participants:  # a reconnect replaces the old connection at once
        log.info("call %s: %s reconnects", call.call_id, claims.speaker_id)
    call.join(claims.speaker_id, participant)
    _watch_connect(request.app, call, claims.speaker_id, participant)
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
                    max_utterance_s=settings.max_utterance_s,
                    turn_silence_ms=settings.turn_pause_ms if settings.utterance_unit == "turn" else None,
                    speculate_ms=settings.asr_speculate_ms or None)
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
        task = asyncio.create_task(push_emotions(app[SUB_REDIS], call.call_id, channel),
                                   name=f"{tag}:emotions")
        participant.tasks.add(task)
        task.add_done_callback(participant.tasks.discard)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("%s: connection %s", tag, pc.connectionState)
        if pc.connectionState == "connected":
            participant.connected.set()
        if pc.connectionState in ("failed", "closed") and \
                call.participants.get(speaker.speaker_id) is participant:
            await call.remove(speaker.speaker_id)

    return participant


def _watch_connect(app: web.Application, call: Call, speaker_id: str, participant: Participant) -> None:
    """Hang up ``participant`` if its connection is not connected within ``connect_timeout_s``
    (an offer without usable ICE candidates would otherwise hold its socket for ever)."""
    timeout_s = app[SETTINGS].connect_timeout_s

    async def watch() -> None:
        try:
            await asyncio.wait_for(participant.connected.wait(), timeout_s)
        except TimeoutError:
            if call.participants.get(speaker_id) is participant:
                log.warning("call %s %s: not connected within %.0f s (%s); hung up", call.call_id,
                            speaker_id, timeout_s, participant.pc.connectionState)
                await call.remove(speaker_id)

    task = asyncio.create_task(watch(), name=f"call {call.call_id} {speaker_id}:connect-timeout")
    participant.tasks.add(task)
    task.add_done_callback(participant.tasks.discard)


async def leave(request: web.Request) -> web.Response:
    call = _call(request)
    body = await _body(request)
    claims = verify_token(request.app[SETTINGS].secret(), _token(request, body), call.call_id,
                          "participant")
    assert claims.speaker_id is not None
    left = await call.remove(claims.speaker_id)
    return web.json_response({"call_id": call.call_id, "speaker_id": claims.speaker_id,
                              "left": left})


async def end_call(request: web.Request) -> web.Response:
    """Participants may end their call; a subscriber token only reads."""
    call = _call(request)
    body = await _body(request)
    verify_token(request.app[SETTINGS].secret(), _token(request, body), call.call_id, "participant")
    ended = await request.app[CALLS].end(call)
    log.info("call %s ended, last seq %d", call.call_id, ended.last_seq)
    return web.json_response({"call_id": call.call_id, "last_seq": ended.last_seq})


async def describe_call(request: web.Request) -> web.Response:
    call = _call(request)
    _reader(request, {}, call.call_id)
    return web.json_response(call.describe())


async def subscribe(request: web.Request) -> web.StreamResponse:
    """The call's events for a subscriber (works for ended calls and on any replica)."""
    call_id = request.match_info["call_id"]
    claims = _reader(request, {"token": request.query.get("token")}, call_id)
    with request.app[LIMITER].open(call_id, request.remote or "unknown"):
        return await serve_subscription(request, request.app[SUB_REDIS], call_id, expires_at_s=claims.exp)


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
    checks["capacity"] = app[CAPACITY].check()
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
    app[CAPACITY] = Capacity(analyzer, settings, metrics_, app[CALLS].seats_in_use)
    app[HOSTS] = allowed_hosts(settings)
    app[LIMITER] = SubscriptionLimiter(settings)
    app[REDIS] = aioredis.Redis.from_url(str(settings.redis_url), socket_connect_timeout=2.0,
                                         max_connections=settings.redis_write_connections)
    # one connection per open stream (each blocks in XREAD) and per participant's data channel
    readers = settings.max_subscriptions + settings.max_active_calls * settings.max_participants_per_call
    app[SUB_REDIS] = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        str(settings.redis_url), socket_connect_timeout=2.0, max_connections=readers, timeout=5))
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
    app[CAPACITY].start()
    app[HOUSEKEEPING] = asyncio.create_task(_housekeeping(app), name="call-housekeeping")


async def _housekeeping(app: web.Application) -> None:
    """End calls idle for ``call_idle_timeout_s`` (as if a participant ended them) and keep
    the live calls' keys from expiring."""
    settings = app[SETTINGS]
    interval_s = min(settings.call_idle_timeout_s / 4, 5.0)
    refresh_s = max(min(settings.call_stream_ttl_s / 3, 60.0), interval_s)
    refreshed = time.monotonic()
    while True:
        await asyncio.sleep(interval_s)  # a period, not a wait for a condition
        for call in app[CALLS]:
            if call.idle_for_s() < settings.call_idle_timeout_s:
                continue
            try:
                ended = await app[CALLS].end(call)
            except Exception:  # one call's failure must not stop the housekeeping of the others
                log.exception("call %s: ending the idle call failed", call.call_id)
                continue
            log.info("call %s ended: no participant for %.0f s, last seq %d", call.call_id,
                     settings.call_idle_timeout_s, ended.last_seq)
        if time.monotonic() - refreshed >= refresh_s:
            refreshed = time.monotonic()
            for call in app[CALLS]:
                try:
                    await app[REDIS].expire(call_key(call.call_id), settings.call_stream_ttl_s)
                except (RedisError, OSError) as exc:
                    log.warning("call %s: key not refreshed: %r", call.call_id, exc)


async def _on_shutdown(app: web.Application) -> None:
    """End every call (flushing speech, publishing CallEnded), then close the clients, all
    within ``shutdown_grace_s``."""
    grace_s = app[SETTINGS].shutdown_grace_s
    deadline = time.monotonic() + grace_s
    await app[CAPACITY].stop()
    task = app.get(HOUSEKEEPING)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    calls = list(app[CALLS])
    if calls:
        ends = asyncio.gather(*(app[CALLS].end(call, timeout_s=grace_s * 0.5) for call in calls),
                              return_exceptions=True)
        try:
            await asyncio.wait_for(ends, grace_s * 0.6)
        except TimeoutError:
            log.error("shutdown: calls not all ended within %.1f s", grace_s * 0.6)
        log.info("shutdown: %d calls ended", len(calls))
    left_s = lambda: max(deadline - time.monotonic(), 0.1)  # noqa: E731
    await app[PUBLISHER].close(timeout_s=left_s() * 0.7)
    await app[TRANSCRIPTS].drain(timeout_s=left_s() * 0.5)
    await app[CALL_STORE].drain(timeout_s=left_s() * 0.5)
    await app[REDIS].aclose()
    await app[SUB_REDIS].aclose(close_connection_pool=True)

