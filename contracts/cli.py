"""The one command-line path: settings from env and flags, user errors as one line.

Every entry point (``python -m streamer``, ``python -m workers``, ``python -m
deploy.embedded``, the trainer, ...) runs through :func:`run_cli`. A user error (a bad flag
value, an unreachable broker, a malformed model file) ends as ``error: <one line>`` on
stderr with exit status 2; anything else is a bug and keeps its traceback, which is why
only *declared* error types count: a bare :class:`ValueError` is not one of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsError

S = TypeVar("S", bound=BaseSettings)


class UserError(Exception):
    """Something the person running the command can fix; printed as one line, exit 2."""


def validation_message(exc: ValidationError) -> str:
    """The first problem of a pydantic error as ``invalid setting NAME: MESSAGE``."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    return f"invalid setting {where}: {first['msg']}"


def load_settings(cls: type[S], argv: Sequence[str] | None = None) -> S:
    """``cls`` filled from its environment variables, then from ``--kebab-case`` flags.

    ``--help`` lists every field with its description. Raises :class:`UserError` for a
    value that does not validate (argparse itself exits 2 on an unknown flag).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return CliApp.run(cls, cli_args=args)
    except ValidationError as exc:
        raise UserError(validation_message(exc)) from None
    except SettingsError as exc:
        raise UserError(str(exc).splitlines()[0]) from None


def run_cli(main: Callable[[], int], user_errors: tuple[type[BaseException], ...] = ()) -> NoReturn:
    """Run ``main`` and exit with its status.

    Args:
        main: The command; returns its exit status.
        user_errors: Further exception types that mean "the user can fix this" (besides
            :class:`UserError`), e.g. a corpus or model error. They print one line and exit
            2; every other exception propagates with its traceback.
    """
    try:
        status = main()
    except (UserError, *user_errors) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(status)
