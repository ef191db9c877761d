"""The HTTP API: bad offers, tokens and calls get a 4xx with a message while another
call, streamed by the real ``python -m streamer.join`` client, carries on; health,
readiness, metrics and CORS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from deploy.speech import timeline_wav, word_error_rate
from tests.kafka import read_call
from tests.streamer.conftest import Gateway, gateway_settings, run_gateway
from tests.waiting import async_wait_until

SENTENCE = "I think we need to buy more coffee."


async def _offer(kind: str = "audio") -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver(kind, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _only_codec(sdp: str, rtpmap: str) -> str:
    """The offer with its audio codecs replaced by one payload type, ``103 <rtpmap>``."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("m=audio"):
            out += [" ".join(line.split()[:3] + ["103"]), f"a=rtpmap:103 {rtpmap}"]
        elif not re.match(r"a=(rtpmap|fmtp|rtcp-fb):", line):
            out.append(line)
    return "\r\n".join(out) + "\r\n"


async def _run_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer.join", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.asyncio
async def test_bad_requests_get_4xx_while_another_call_goes_on(gateway: Gateway, tmp_path: Path) -> None:
    timeline_wav(tmp_path / "erin.wav", [(1.5, SENTENCE)], 5.0, tmp_path)
    client = await _run_cli("--server", gateway.url, "--create", "--name", "erin",
                            "--wav", str(tmp_path / "erin.wav"), "--grace-s", "0.5", "--end")
    assert client.stdout is not None
    first = json.loads(await asyncio.wait_for(client.stdout.readline(), 60))
    good_call = first["call_id"]

    status, call = await gateway.post("/v1/calls", {"participants": ["mallory"]})
    call_id, token = call["call_id"], call["participants"][0]["token"]
    join = f"/v1/calls/{call_id}/join"
    offer = await _offer()
    cases = [
        (join, None, "{not json", 400, "must be JSON"),
        (join, {"sdp": offer, "type": "answer", "token": token}, None, 400, "'type' must be 'offer'"),
        (join, {"sdp": "v=0\r\nthis is not SDP\r\n", "type": "offer", "token": token}, None, 400, "SDP"),
        (join, {"sdp": await _offer("video"), "type": "offer", "token": token}, None, 400, "no audio m-line"),
        (join, {"sdp": _only_codec(offer, "ISAC/16000"), "type": "offer", "token": token}, None, 400,
         "unsupported audio codec: offered ISAC"),
        (join, {"sdp": offer, "type": "offer"}, None, 401, "token is required"),
        (join, {"sdp": offer, "type": "offer", "token": token[:-3] + "xyz"}, None, 401, "signature"),
        (join, {"sdp": offer, "type": "offer", "token": call["subscriber_token"]}, None, 403, "role"),
        (f"/v1/calls/{good_call}/join", {"sdp": offer, "type": "offer", "token": token}, None, 403,
         "another call"),
        ("/v1/calls/c-nope/join", {"sdp": offer, "type": "offer", "token": token}, None, 404, "unknown call"),
        ("/v1/calls", {"participants": "mallory"}, None, 400, "list of names"),
        (f"/v1/calls/{call_id}/participants", {"name": "", "token": call["invite_token"]}, None, 400, "name"),
    ]
    for path, body, raw, status, message in cases:
        got, reply = await gateway.post(path, body, raw=raw, headers={"Content-Type": "application/json"})
        assert (got, message in reply.get("error", "")) == (status, True), (path, str(body)[:80], reply)

    status, refused = await gateway.post(f"/v1/calls/{call_id}/participants",
                                         {"name": "trent", "token": call["subscriber_token"]})
    assert (status, refused["error"]) == (403, "token has role 'subscriber'; this needs 'invite'")
    status, minted = await gateway.post(f"/v1/calls/{call_id}/participants",
                                        {"name": "trent", "token": call["invite_token"]})
    assert status == 201 and minted["name"] == "trent" and minted["token"] != token

    out, err = await asyncio.wait_for(client.communicate(), 60)
    assert client.returncode == 0, err.decode()[-2000:]
    utterances, ended = await read_call(gateway.settings.broker_bootstrap_servers, good_call)
    assert ended is not None and len(utterances) == 1
    assert word_error_rate(SENTENCE, utterances[0].text) <= 0.1 and utterances[0].speaker_name == "erin"


@pytest.mark.asyncio
async def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    client = await _run_cli("--server", "http://127.0.0.1:9", "--create", "--name", "x",
                            "--wav", str(tmp_path / "missing.wav"))
    _, err = await asyncio.wait_for(client.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert client.returncode == 2 and len(lines) == 1 and lines[0].startswith("streamer.join: error:"), lines


async def _ready(gateway: Gateway) -> tuple[int, dict | str] | None:
    reply = await gateway.get("/readyz")
    return reply if reply[0] == 200 else None


@pytest.mark.asyncio
async def test_health_readiness_metrics_cors(gateway: Gateway) -> None:
    assert await gateway.get("/healthz") == (200, {"status": "ok"})
    status, ready = await async_wait_until(  # the producer connects in the background
        lambda: _ready(gateway), 10, interval_s=0.2, message="the gateway never got ready")
    assert (status, ready) == (200, {"ready": True, "checks": {"broker": "ok", "redis": "ok"}})
    status, text = await gateway.get("/metrics")
    for name in ("streamer_active_calls", "streamer_utterance_latency_seconds_bucket",
                 "streamer_asr_real_time_factor_bucket", "streamer_dropped_audio_frames_total"):
        assert name in text
    async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/v1/calls", json={}, headers={"Origin": "http://example.test"}) as response:
        assert response.status == 201  # CORS allow-list empty by default: no origin is reflected
        assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.asyncio
async def test_cors_reflects_only_listed_origins(tansu_broker, redis_server, analyzer) -> None:
    settings = gateway_settings(tansu_broker, redis_server, cors_origins=["http://app.test"])
    async with run_gateway(settings, analyzer) as gw, aiohttp.ClientSession() as session:
        async with session.options(gw.url + "/v1/calls", headers={
                "Origin": "http://app.test", "Access-Control-Request-Method": "POST"}) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "http://app.test"
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        for path in ("/v1/calls", "/metrics"):
            async with session.options(gw.url + path, headers={"Origin": "http://evil.test"}) as response:
                assert response.status == 204 and "Access-Control-Allow-Origin" not in response.headers
        async with session.get(gw.url + "/metrics", headers={"Origin": "http://evil.test"}) as response:
            assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers
