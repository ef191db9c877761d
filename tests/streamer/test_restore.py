"""A call restored after a crash of the streamer: re-registered for the workers, and
bounded by the active-calls cap like a new one.

A second gateway on the same Redis stands in for the restarted process (it does not know
the call); the first stays up, because a graceful shutdown ends its calls."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from contracts.call_stream import call_key
from deploy.services import free_port
from streamer.calls import live_call_key
from tests.streamer.conftest import gateway_settings, run_gateway
from tests.waiting import async_wait_until

BAD_OFFER = {"sdp": "v=0", "type": "offer"}


@pytest.mark.asyncio
async def test_a_restored_call_sets_its_call_key_again(tansu_broker, redis_server, analyzer) -> None:
    settings = gateway_settings(tansu_broker, redis_server)
    client = aioredis.Redis.from_url(str(settings.redis_url))
    async with run_gateway(settings, analyzer) as first:
        status, call = await first.post("/v1/calls", {"participants": ["ann"]})
        assert status == 201
        call_id, token = call["call_id"], call["participants"][0]["token"]
        await client.delete(call_key(call_id))  # as if the key had expired meanwhile
        second_settings = settings.model_copy(update={"port": free_port()})
        async with run_gateway(second_settings, analyzer) as second:
            status, body = await second.post(f"/v1/calls/{call_id}/join", {**BAD_OFFER, "token": token})
            assert status == 400, body  # the offer is refused, but the call was restored first
            assert await client.exists(call_key(call_id)) == 1
            status, described = await second.get(f"/v1/calls/{call_id}", token)
            assert status == 200 and described["call_id"] == call_id
    await client.aclose()


@pytest.mark.asyncio
async def test_restoring_a_call_respects_the_active_calls_cap(tansu_broker, redis_server, analyzer) -> None:
    settings = gateway_settings(tansu_broker, redis_server, max_active_calls=1)
    async with run_gateway(settings, analyzer) as first:
        status, call = await first.post("/v1/calls", {"participants": ["ann"]})
        assert status == 201
        async with run_gateway(settings.model_copy(update={"port": free_port()}), analyzer) as second:
            assert (await second.post("/v1/calls", {}))[0] == 201  # its one slot is taken
            status, body = await second.post(f"/v1/calls/{call['call_id']}/join",
                                             {**BAD_OFFER, "token": call["participants"][0]["token"]})
            assert status == 503 and "calls" in body["error"], body


@pytest.mark.asyncio
async def test_an_invite_limit_outlives_a_restart(tansu_broker, redis_server, analyzer) -> None:
    """The invite's count is in the call's Redis record: a restarted streamer does not
    give a leaked invite link a fresh ``max_invites_per_call``."""
    settings = gateway_settings(tansu_broker, redis_server, max_invites_per_call=2)
    async with run_gateway(settings, analyzer) as first:
        status, call = await first.post("/v1/calls", {"participants": ["ann"]})
        invite = {"token": call["invite_token"]}
        url = f"/v1/calls/{call['call_id']}/participants"
        assert (await first.post(url, {**invite, "name": "bob"}))[0] == 201
        client = aioredis.Redis.from_url(str(settings.redis_url))
        await async_wait_until(lambda: client.hget(live_call_key(call["call_id"]), "invites_minted"),
                               10, message="the invite count was not recorded")
        await client.aclose()
        async with run_gateway(settings.model_copy(update={"port": free_port()}), analyzer) as second:
            # the restarted process restores the call for its invite token, counting on
            assert (await second.post(url, {**invite, "name": "carol"}))[0] == 201
            status, body = await second.post(url, {**invite, "name": "dave"})
            assert status == 429 and "at most 2" in body["error"], body
            status, body = await second.post(url, {"token": call["subscriber_token"], "name": "eve"})
            assert status == 403, body
