"""``python -m streamer``: run the gateway (settings from ``CBERL_*`` env, flags override)."""

from __future__ import annotations

import json

from aiohttp import web

from cberl_model.artifact import ModelError
from cberl_model.features.media import FeaturizerError
from cberl_model.features.whisper_model import WhisperModelError
from contracts.cli import load_settings, run_cli
from contracts.logs import setup_logging
from streamer.access_log import PathOnlyAccessLogger
from streamer.gateway import create_app
from streamer.analyzer import SegmentAnalyzer
from streamer.settings import StreamerSettings, ensure_secret


def main() -> int:
    settings = load_settings(StreamerSettings)
    setup_logging(settings.log_level, settings.log_json)
    settings = ensure_secret(settings)
    print("streamer settings: " + json.dumps(settings.masked(), sort_keys=True), flush=True)
    analyzer = SegmentAnalyzer.load(settings)
    web.run_app(create_app(settings, analyzer), host=settings.host, port=settings.port,
                access_log_class=PathOnlyAccessLogger, print=lambda msg: print(msg, flush=True))
    return 0


if __name__ == "__main__":
    run_cli(main, user_errors=(ModelError, WhisperModelError, FeaturizerError))
