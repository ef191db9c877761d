"""``python -m streamer.join``: join a call as one participant and stream a WAV into it.

A real aiortc client (ICE restricted to 127.0.0.1 like the gateway, no STUN): it creates
a call or joins one with a participant token, sends the WAV (and optionally a video file)
in real time -- WebRTC paces media by its timestamps -- prints the call's emotion events
arriving on the ``emotions`` data channel as JSON lines, and leaves when the file has
been sent and a grace period has passed. Several at once make a multi-party call.

Output (stdout, JSON lines): first ``{"call_id", "name"}`` (with ``--create`` also the
call's ``subscriber_token``, to read it, and ``invite_token``, to let others join with
``--invite``), then one line per emotion event. Errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer, MediaRelay

from streamer.ice import restrict_host_addresses, rtc_configuration


class JoinError(Exception):
    """Something the user can fix: a bad server URL, token, file, or a refused join.

    ``status``: the HTTP status when the gateway answered (``None``: it did not answer).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JoinResult:
    """What one participant's session produced."""

    call_id: str
    speaker_id: str
    emotion_events: list[dict[str, Any]]


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        async with session.post(url, json=body) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                message = payload.get("error") if isinstance(payload, dict) else payload
                raise JoinError(f"{url}: HTTP {response.status}: {message}", response.status)
            return payload
    except (aiohttp.ClientError, json.JSONDecodeError) as exc:
        raise JoinError(f"{url}: {exc}") from exc


async def create_call(server: str, names: list[str], api_key: str | None = None) -> dict[str, Any]:
    """``POST /v1/calls``: the call id, one participant token per name, the subscriber and
    invite tokens (``api_key``: the gateway's ``CBERL_API_KEY``, when it has one)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with aiohttp.ClientSession(headers=headers) as session:
        return await _post(session, f"{server}/v1/calls", {"participants": names})


async def add_participant(server: str, call_id: str, name: str, invite_token: str) -> dict[str, Any]:
    """``POST /v1/calls/{id}/participants``: a participant token for ``name``, minted with
    the call's invite token (``invite_token`` of the creation; ``--create`` prints it)."""
    async with aiohttp.ClientSession() as session:
        return await _post(session, f"{server}/v1/calls/{call_id}/participants",
                           {"name": name, "token": invite_token})


async def _alive(session: aiohttp.ClientSession, server: str, call_id: str, token: str,
                 speaker_id: str) -> bool:
    """Whether the gateway still has this participant in the call (``GET /v1/calls/{id}``)."""
    try:
        async with session.get(f"{server}/v1/calls/{call_id}", headers={"Authorization": f"Bearer {token}"},
                               timeout=aiohttp.ClientTimeout(total=3)) as response:
            if response.status != 200:
                return False
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
        return False
    return any(p.get("speaker_id") == speaker_id for p in body.get("participants", []))


async def join_call(server: str, call_id: str, token: str, wav: Path, video: Path | None = None,
                    grace_s: float = 2.0, hangup_after_s: float | None = None, end_call: bool = False,
                    on_event: Callable[[dict[str, Any]], None] | None = None,
                    reconnect_s: float = 60.0, check_every_s: float = 1.0,
                    on_reconnect: Callable[[int], None] | None = None) -> JoinResult:
    """Stream ``wav`` (and ``video``) into the call as the token's participant.

    The file plays in real time like a microphone, whatever the connection does. The
    client checks every ``check_every_s`` that the gateway still has it in the call; when
    the connection fails or the gateway lost it (a restart), it joins again with the same
    token -- the same speaker, the call restored by the gateway -- retrying for up to
    ``reconnect_s``. What the file "says" while it is disconnected is lost, like speech
    into a dropped call.

    Args:
        grace_s: Seconds to stay after the file has been sent (the last utterance's
            emotion events arrive then).
        hangup_after_s: Close the connection this many seconds into the file, without
            ``leave`` (a participant who hangs up mid-sentence).
        end_call: ``POST /end`` after leaving (the last participant ends the call).
        on_event: Called with each emotion event from the data channel.
        reconnect_s: How long to keep trying to join again (0: never reconnect).
        on_reconnect: Called with the reconnect count after each successful rejoin.
    """
    for path in (wav, video):
        if path is not None and not path.is_file():
            raise JoinError(f"no such file: {path}")
    restrict_host_addresses(["127.0.0.1"])
    events: list[dict[str, Any]] = []
    try:
        players = [MediaPlayer(str(wav))] + ([MediaPlayer(str(video))] if video else [])
    except av.FFmpegError as exc:
        raise JoinError(f"cannot read media: {exc}") from exc
    audio = players[0].audio
    if audio is None:
        raise JoinError(f"{wav} holds no audio stream")
    video_track = players[1].video if video is not None else None
    relay = MediaRelay()  # the sources outlive each peer connection (reconnects)
    sent = asyncio.Event()
    audio.on("ended", sent.set)

    def on_message(message: str | bytes) -> None:
        event = json.loads(message)
        events.append(event)
        if on_event is not None:
            on_event(event)

    async def connect(session: aiohttp.ClientSession) -> tuple[RTCPeerConnection, str, asyncio.Event]:
        pc = RTCPeerConnection(rtc_configuration())
        lost = asyncio.Event()
        pc.addTrack(relay.subscribe(audio))
        if video_track is not None:
            pc.addTrack(relay.subscribe(video_track))
        pc.createDataChannel("emotions").on("message", on_message)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                lost.set()

        try:
            await pc.setLocalDescription(await pc.createOffer())
            answer = await _post(session, f"{server}/v1/calls/{call_id}/join",
                                 {"sdp": pc.localDescription.sdp, "type": "offer", "token": token})
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        except BaseException:
            await pc.close()
            raise
        return pc, answer["speaker_id"], lost

    async def watch(session: aiohttp.ClientSession, speaker_id: str, lost: asyncio.Event) -> None:
        misses = 0
        while not lost.is_set():
            await asyncio.sleep(check_every_s)
            misses = 0 if await _alive(session, server, call_id, token, speaker_id) else misses + 1
            if misses >= 2:
                lost.set()

    async def rejoin(session: aiohttp.ClientSession) -> tuple[RTCPeerConnection, str, asyncio.Event]:
        deadline = asyncio.get_running_loop().time() + reconnect_s
        delay = 0.25
        while True:
            try:
                return await connect(session)
            except JoinError:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)  # a refused connection is cheap: retry every second

    async with aiohttp.ClientSession() as session:
        # the first join waits out a gateway at capacity (503, Retry-After) for reconnect_s
        deadline = asyncio.get_running_loop().time() + reconnect_s
        while True:
            try:
                pc, speaker_id, lost = await connect(session)
                break
            except JoinError as exc:
                wait = 2.0
                if exc.status != 503 or asyncio.get_running_loop().time() + wait > deadline:
                    raise
            await asyncio.sleep(wait)
        reconnects = 0
        try:
            done = asyncio.ensure_future(sent.wait()) if hangup_after_s is None else \
                asyncio.ensure_future(asyncio.wait_for(sent.wait(), hangup_after_s))
            while True:
                watcher = asyncio.ensure_future(watch(session, speaker_id, lost))
                await asyncio.wait([done, watcher], return_when=asyncio.FIRST_COMPLETED)
                watcher.cancel()
                if done.done() or reconnect_s <= 0:
                    break
                await pc.close()  # the gateway lost us: join again as the same speaker
                pc, speaker_id, lost = await rejoin(session)
                reconnects += 1
                if on_reconnect is not None:
                    on_reconnect(reconnects)
            if hangup_after_s is not None:
                with contextlib.suppress(TimeoutError):
                    await done
                return JoinResult(call_id, speaker_id, events)
            await done  # the whole file, even when no longer connected (reconnect_s=0)
            await asyncio.sleep(grace_s)
            await _post(session, f"{server}/v1/calls/{call_id}/leave", {"token": token})
            if end_call:
                await _post(session, f"{server}/v1/calls/{call_id}/end", {"token": token})
            return JoinResult(call_id, speaker_id, events)
        finally:
            await pc.close()
            for player in players:
                for track in (player.audio, player.video):
                    if track is not None:
                        track.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamer.join", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8080", help="gateway base URL")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--call", help="join this call (needs --token or --invite)")
    target.add_argument("--create", action="store_true", help="create a new call and join it")
    credential = parser.add_mutually_exclusive_group()
    credential.add_argument("--token", help="participant token for --call")
    credential.add_argument("--invite", help="the call's invite token (the invite_token --create prints): "
                                             "mints a participant token for --name")
    parser.add_argument("--api-key", help="the gateway's API key for --create (CBERL_API_KEY there)")
    parser.add_argument("--name", required=True, help="participant (speaker) name")
    parser.add_argument("--wav", required=True, type=Path, help="audio to stream (any ffmpeg format)")
    parser.add_argument("--video", type=Path, help="optional video file to stream alongside")
    parser.add_argument("--grace-s", type=float, default=2.0, help="stay this long after the file ends")
    parser.add_argument("--hangup-after-s", type=float, help="hang up this many seconds in")
    parser.add_argument("--end", action="store_true", help="end the call after leaving")
    return parser


async def _main(args: argparse.Namespace) -> None:
    server = args.server.rstrip("/")
    if args.create:
        created = await create_call(server, [args.name], args.api_key)
        call_id, token = created["call_id"], created["participants"][0]["token"]
        header = {"call_id": call_id, "subscriber_token": created["subscriber_token"],
                  "invite_token": created["invite_token"]}
    else:
        if args.invite:
            args.token = (await add_participant(server, args.call, args.name, args.invite))["token"]
        if not args.token:
            raise JoinError("--call needs --token (a participant token) or --invite (the call's "
                            "invite token)")
        call_id, token, header = args.call, args.token, {"call_id": args.call}
    print(json.dumps({**header, "name": args.name}), flush=True)
    await join_call(server, call_id, token, args.wav, args.video, grace_s=args.grace_s,
                    hangup_after_s=args.hangup_after_s, end_call=args.end,
                    on_event=lambda e: print(json.dumps(e), flush=True))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_main(args))
    except JoinError as exc:
        print(f"streamer.join: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
