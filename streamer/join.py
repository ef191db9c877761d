"""``python -m streamer.join``: join a call as one participant and stream a WAV into it.

A real aiortc client (ICE restricted to 127.0.0.1 like the gateway, no STUN): it creates
a call or joins one with a participant token, sends the WAV (and optionally a video file)
in real time -- WebRTC paces media by its timestamps -- prints the call's emotion events
arriving on the ``emotions`` data channel as JSON lines, and leaves when the file has
been sent and a grace period has passed. Several at once make a multi-party call.

Output (stdout, JSON lines): first ``{"call_id", "speaker_id", ...}``, then one line per
emotion event. Errors: one line on stderr, exit status 2.
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
from aiortc.contrib.media import MediaPlayer

from streamer.ice import restrict_host_addresses, rtc_configuration


class JoinError(Exception):
    """Something the user can fix: a bad server URL, token, file, or a refused join."""


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
                raise JoinError(f"{url}: HTTP {response.status}: {message}")
            return payload
    except (aiohttp.ClientError, json.JSONDecodeError) as exc:
        raise JoinError(f"{url}: {exc}") from exc


async def create_call(server: str, names: list[str]) -> dict[str, Any]:
    """``POST /v1/calls``: the call id and one participant token per name."""
    async with aiohttp.ClientSession() as session:
        return await _post(session, f"{server}/v1/calls", {"participants": names})


async def add_participant(server: str, call_id: str, name: str, invite_token: str) -> dict[str, Any]:
    """``POST /v1/calls/{id}/participants``: a participant token for ``name``, minted with
    any token of the call (the subscriber token ``--create`` prints works as an invite)."""
    async with aiohttp.ClientSession() as session:
        return await _post(session, f"{server}/v1/calls/{call_id}/participants",
                           {"name": name, "token": invite_token})


async def join_call(server: str, call_id: str, token: str, wav: Path, video: Path | None = None,
                    grace_s: float = 2.0, hangup_after_s: float | None = None, end_call: bool = False,
                    on_event: Callable[[dict[str, Any]], None] | None = None) -> JoinResult:
    """Stream ``wav`` (and ``video``) into the call as the token's participant.

    Args:
        grace_s: Seconds to stay after the file has been sent (the last utterance's
            emotion events arrive then).
        hangup_after_s: Close the connection this many seconds into the file, without
            ``leave`` (a participant who hangs up mid-sentence).
        end_call: ``POST /end`` after leaving (the last participant ends the call).
        on_event: Called with each emotion event from the data channel.
    """
    for path in (wav, video):
        if path is not None and not path.is_file():
            raise JoinError(f"no such file: {path}")
    restrict_host_addresses(["127.0.0.1"])
    events: list[dict[str, Any]] = []
    pc = RTCPeerConnection(rtc_configuration())
    try:
        players = [MediaPlayer(str(wav))] + ([MediaPlayer(str(video))] if video else [])
    except av.FFmpegError as exc:
        raise JoinError(f"cannot read media: {exc}") from exc
    audio = players[0].audio
    if audio is None:
        raise JoinError(f"{wav} holds no audio stream")
    sent = asyncio.Event()
    audio.on("ended", sent.set)
    pc.addTrack(audio)
    if video is not None and players[1].video is not None:
        pc.addTrack(players[1].video)
    channel = pc.createDataChannel("emotions")

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        event = json.loads(message)
        events.append(event)
        if on_event is not None:
            on_event(event)

    async with aiohttp.ClientSession() as session:
        try:
            await pc.setLocalDescription(await pc.createOffer())
            answer = await _post(session, f"{server}/v1/calls/{call_id}/join",
                                 {"sdp": pc.localDescription.sdp, "type": "offer", "token": token})
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            if hangup_after_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sent.wait(), hangup_after_s)
                return JoinResult(call_id, answer["speaker_id"], events)
            await sent.wait()
            await asyncio.sleep(grace_s)
            await _post(session, f"{server}/v1/calls/{call_id}/leave", {"token": token})
            if end_call:
                await _post(session, f"{server}/v1/calls/{call_id}/end", {"token": token})
            return JoinResult(call_id, answer["speaker_id"], events)
        finally:
            await pc.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamer.join", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8080", help="gateway base URL")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--call", help="join this call (needs --token or --invite)")
    target.add_argument("--create", action="store_true", help="create a new call and join it")
    credential = parser.add_mutually_exclusive_group()
    credential.add_argument("--token", help="participant token for --call")
    credential.add_argument("--invite", help="any token of the call (e.g. the subscriber token --create "
                                             "prints): mints a participant token for --name")
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
        created = await create_call(server, [args.name])
        call_id, token = created["call_id"], created["participants"][0]["token"]
        header = {"call_id": call_id, "subscriber_token": created["subscriber_token"]}
    else:
        if args.invite:
            args.token = (await add_participant(server, args.call, args.name, args.invite))["token"]
        if not args.token:
            raise JoinError("--call needs --token (a participant token) or --invite (any token of the call)")
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
