"""The one clock of event timestamps (epoch milliseconds, wall clock).

Latency across processes (end of speech in the streamer -> emit in a worker) is the
difference of two such stamps, so both services must read the same clock.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return int(time.time() * 1000)
