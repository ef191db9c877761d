"""``python -m streamer``: run the gateway (settings from ``CBERL_*`` env, flags override)."""

from __future__ import annotations

import json
import logging
import sys

from aiohttp import web
from pydantic import ValidationError

from cberl_model.artifact import ModelError
from cberl_model.features.media import FeaturizerError
from cberl_model.features.whisper_model import WhisperModelError
from streamer.access_log import PathOnlyAccessLogger
from streamer.gateway import create_app
from streamer.recognizer import SegmentRecognizer
from streamer.settings import ensure_secret, settings_from_cli


def main(argv: list[str] | None = None) -> int:
    try:
        settings = ensure_secret(settings_from_cli(argv))
    except ValidationError as exc:
        print(f"streamer: invalid settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}",
              file=sys.stderr)
        return 2
    fmt = '{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}' \
        if settings.log_json else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)
    print("streamer settings: " + json.dumps(settings.effective_config(), sort_keys=True), flush=True)
    try:
        recognizer = SegmentRecognizer.load(settings)
    except (ModelError, WhisperModelError, FeaturizerError) as exc:
        print(f"streamer: {exc}", file=sys.stderr)
        return 2
    web.run_app(create_app(settings, recognizer), host=settings.host, port=settings.port,
                access_log_class=PathOnlyAccessLogger, print=lambda msg: print(msg, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
