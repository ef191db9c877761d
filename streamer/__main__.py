"""``python -m streamer``: run the gateway (settings from ``CBERL_*`` env, flags override).

SIGTERM or SIGINT starts the shutdown: the listener closes, every call ends (its last
speech flushed, ``CallEnded`` published), the clients close, and the process exits within
``shutdown_grace_s``; a second signal exits at once. Logs go through
:func:`contracts.logs.setup_logging` (control characters escaped), the access log through
:class:`~streamer.access_log.PathOnlyAccessLogger` (no query strings, so no tokens).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

from aiohttp import web

from cberl_model.artifact import ModelError
from cberl_model.features.media import FeaturizerError
from cberl_model.features.whisper_model import WhisperModelError
from contracts.cli import load_settings, run_cli
from contracts.logs import setup_logging
from contracts.standby import block_promotion, wait_as_standby
from streamer.access_log import PathOnlyAccessLogger
from streamer.analyzer import SegmentAnalyzer
from streamer.gateway import create_app
from streamer.settings import StreamerSettings, ensure_secret

log = logging.getLogger("streamer")


async def serve(settings: StreamerSettings, analyzer: SegmentAnalyzer) -> int:
    """Serve until SIGTERM/SIGINT, then shut down within ``shutdown_grace_s``; the exit status."""
    loop = asyncio.get_running_loop()
    stop, again = asyncio.Event(), asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            again.set()
            return
        log.info("%s: shutting down (grace %.0f s)", signal.Signals(signum).name, settings.shutdown_grace_s)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    grace_s = settings.shutdown_grace_s
    runner = web.AppRunner(create_app(settings, analyzer), handle_signals=False,
                           access_log_class=PathOnlyAccessLogger, shutdown_timeout=min(2.0, grace_s / 4))
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    print(f"serving on http://{settings.host}:{settings.port}", flush=True)
    await stop.wait()
    cleanup = asyncio.create_task(runner.cleanup(), name="shutdown")
    second = asyncio.create_task(again.wait(), name="second-signal")
    done, _ = await asyncio.wait({cleanup, second}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
    second.cancel()
    if cleanup in done and cleanup.exception() is None:
        log.info("shut down cleanly")
        return 0
    cleanup.cancel()
    log.error("shutdown cut short (%s)", "second signal" if second in done else f"over {grace_s:.0f} s")
    return 1


def main() -> int:
    settings = load_settings(StreamerSettings)
    if settings.standby_ready_file is not None:  # before anything slow
        block_promotion()
    setup_logging(settings.log_level, settings.log_json)
    settings = ensure_secret(settings)
    print("streamer settings: " + json.dumps(settings.masked(), sort_keys=True), flush=True)
    analyzer = SegmentAnalyzer.load(settings)
    if settings.standby_ready_file is not None:
        wait_as_standby(settings.standby_ready_file, "serve")
    code = asyncio.run(serve(settings, analyzer))
    # Everything is closed and flushed; interpreter finalization can still hang in the
    # model's native threads (seen: no Python frame left), so end the process here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run_cli(main, user_errors=(ModelError, WhisperModelError, FeaturizerError))
