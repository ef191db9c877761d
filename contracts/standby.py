"""Warm spares: a process that has imported and loaded everything, waiting to take over.

A streamer's or a worker's start is mostly imports and models (seconds on a small CPU).
The embedded stack (``deploy.services.StandbyPythonService``) keeps a spare of each: started
with ``--standby-ready-file FILE``, it calls :func:`block_promotion` first thing, loads, and
then :func:`wait_as_standby` before it binds a port or joins a consumer group. On SIGUSR1 it
goes on exactly as a fresh process would, so a dead child is replaced in the time it takes
to serve, not to start.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

PROMOTE = signal.SIGUSR1
"""The signal that promotes a spare (its default action ends a process: hence the block)."""


def block_promotion() -> None:
    """Hold :data:`PROMOTE` pending from now on; call it before anything slow."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {PROMOTE})


def wait_as_standby(ready_file: Path, then: str) -> None:
    """Say we are ready (``ready_file`` holds our pid) and wait for :data:`PROMOTE`.

    The file appears only once the signal is blocked and the load is done, so the
    supervisor never signals too early. ``then`` names what promotion starts (for the log).
    """
    ready_file.write_text(f"{os.getpid()}\n")
    log.info("standby: loaded, waiting for SIGUSR1 to %s", then)
    signal.sigwait({PROMOTE})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {PROMOTE})
    ready_file.unlink(missing_ok=True)
    log.info("standby: promoted, going on to %s", then)
