"""The one place that decides which addresses WebRTC may use (ICE).

aiortc would otherwise ask a public STUN server (its default ``iceServers``), and aioice
gathers host candidates from every interface *except* loopback, so a call on 127.0.0.1
finds no candidates and hangs. :func:`restrict_host_addresses` replaces aioice's host
address discovery (``aioice.ice.get_host_addresses``, the function its ``Connection``
calls while gathering) with a fixed list, 127.0.0.1 by default; :func:`rtc_configuration`
gives every peer connection an empty server list. Both the gateway and ``streamer.join``
call them, so neither ever sends a packet to another address.
"""

from __future__ import annotations

import ipaddress

import aioice.ice
from aiortc import RTCConfiguration


def restrict_host_addresses(addresses: list[str]) -> None:
    """Make aioice offer host candidates on exactly ``addresses`` (process-wide)."""
    fixed = [str(ipaddress.ip_address(a)) for a in addresses]  # ValueError on a bad address

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]

    aioice.ice.get_host_addresses = host_addresses


def rtc_configuration() -> RTCConfiguration:
    """No STUN/TURN servers: host candidates only."""
    return RTCConfiguration(iceServers=[])
