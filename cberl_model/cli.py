"""Shared command-line plumbing: logging set-up and user-facing error handling."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from cberl_model.artifact import ModelError
from cberl_model.data import CorpusError
from cberl_model.features.text_encoder import EncoderError

USER_ERRORS = (CorpusError, ModelError, EncoderError, ValueError, FileNotFoundError)
"""Errors a user can cause: reported in one line with exit status 2, never a traceback."""


def setup_logging(verbose: bool = False) -> None:
    """One format for every command; quiet third-party loggers."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "huggingface_hub", "peft", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def run_cli(main: Callable[[], int]) -> None:
    """Run ``main`` and turn user errors into a one-line message and exit status 2."""
    try:
        sys.exit(main())
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
