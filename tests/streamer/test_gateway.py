"""The HTTP API: bad offers, tokens and calls get a 4xx with a message while another
call, streamed by the real ``python -m streamer.join`` client, carries on; health,
readiness, metrics and CORS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from deploy.services import PythonService, free_port
from deploy.speech import timeline_wav, word_error_rate
from streamer.gateway import PUBLISHER
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
    assert (status, ready) == (200, {"ready": True, "checks": {"broker": "ok", "redis": "ok",
                                                                "capacity": "ok"}})
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


@pytest.mark.asyncio
async def test_readiness_reports_a_publisher_that_cannot_publish(gateway: Gateway) -> None:
    await async_wait_until(lambda: _ready(gateway), 10, interval_s=0.2, message="never ready")
    task = gateway.app[PUBLISHER]._task
    assert task is not None
    task.cancel()  # whatever ends the sender task, readiness must say so
    await asyncio.gather(task, return_exceptions=True)
    status, ready = await gateway.get("/readyz")
    assert isinstance(ready, dict)
    assert (status, ready["ready"], ready["checks"]["broker"], ready["checks"]["redis"]) == (
        503, False, "the publisher is closed", "ok")


@pytest.mark.asyncio
async def test_sigint_ends_calls_and_exits_within_the_grace(tansu_broker, redis_server,
                                                            tmp_path: Path) -> None:
    """SIGINT (or SIGTERM): the streamer ends its calls (CallEnded published) and exits in time."""
    port, grace_s = free_port(), 4.0
    service = PythonService(
        "streamer", "streamer",
        ["--port", str(port), "--broker-bootstrap-servers", tansu_broker.bootstrap_servers,
         "--redis-url", redis_server.url, "--shutdown-grace-s", str(grace_s)],
        port, "/readyz", tmp_path, {"CBERL_TOKEN_SECRET": "t" * 32, "OMP_NUM_THREADS": "1"})
    await asyncio.to_thread(service.start)
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/v1/calls", json={"participants": ["ann"]}) as response:
            assert response.status == 201
            call_id = (await response.json())["call_id"]
        process = service._process
        assert process is not None
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            code = await asyncio.to_thread(process.wait, grace_s + 2)
        except subprocess.TimeoutExpired:
            code = None
        took_s = time.monotonic() - started
    finally:
        service.kill()
    assert code == 0 and took_s <= grace_s + 1, (code, took_s, service.output_tail())
    assert "shut down cleanly" in service.output_tail(40)
    _, ended = await read_call(tansu_broker.bootstrap_servers, call_id, timeout_s=30)
    assert ended is not None and ended.last_seq == -1
