"""cberl_model's command-line plumbing: its user errors and its logging, on ``contracts.cli``.

``python -m cberl_model.train``, ``.evaluate`` and ``.corpus`` run through :func:`run_cli`:
an error in :data:`USER_ERRORS` (a bad setting, an unreadable corpus or model, a missing
file) is one line on stderr and exit status 2; anything else, a bare :class:`ValueError`
included, is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from cberl_model.artifact import ModelError
from cberl_model.corpus.media_files import MediaError
from cberl_model.data import CorpusError
from cberl_model.features.media import FeaturizerError
from cberl_model.features.text_encoder import EncoderError
from cberl_model.features.whisper_model import WhisperModelError
from cberl_model.runtime import ConfigError
from contracts import cli as contracts_cli
from contracts import logs as contracts_logs

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, CorpusError, ModelError, EncoderError, FeaturizerError, WhisperModelError,
    MediaError, FileNotFoundError)
"""Errors a user can cause: reported in one line with exit status 2, never a traceback."""


def setup_logging(verbose: bool = False, json_lines: bool = False) -> None:
    """The project's one logging set-up (:func:`contracts.logs.setup_logging`), HF quietened."""
    contracts_logs.setup_logging("DEBUG" if verbose else "INFO", json_lines)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def run_cli(main: Callable[[], int]) -> NoReturn:
    """Run ``main`` and exit with its status; :data:`USER_ERRORS` become one line, exit 2."""
    contracts_cli.run_cli(main, user_errors=USER_ERRORS)
