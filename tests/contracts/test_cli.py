"""The one CLI path: settings from env and flags, declared user errors as one line, bugs
with their traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pydantic import Field

from contracts.cli import UserError, load_settings
from contracts.settings import SharedSettings


class _Settings(SharedSettings):
    count: int = Field(3, ge=1)
    names: list[str] = Field(default_factory=lambda: ["a"])


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBERL_COUNT", "5")
    monkeypatch.setenv("CBERL_PARTITIONS", "2")
    settings = load_settings(_Settings, ["--count", "7", "--names", "x,y", "--log-json"])
    got = (settings.count, settings.partitions, settings.names, settings.log_json)
    assert got == (7, 2, ["x", "y"], True)


def test_a_bad_value_is_a_user_error_naming_the_setting() -> None:
    with pytest.raises(UserError, match="invalid setting count: Input should be greater than or equal to 1"):
        load_settings(_Settings, ["--count", "0"])


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = "from contracts.cli import UserError, run_cli\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_declared_user_errors_print_one_line_and_exit_2() -> None:
    result = _run("""
        class CorpusError(Exception): pass
        def main():
            raise CorpusError("bad row 3\\n  in file x.csv")
        run_cli(main, user_errors=(CorpusError,))
    """)
    assert result.returncode == 2
    assert result.stderr == "error: bad row 3 in file x.csv\n"


def test_a_bare_value_error_is_a_bug_and_keeps_its_traceback() -> None:
    result = _run("""
        def main():
            raise ValueError("internal invariant broken")
        run_cli(main)
    """)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: internal invariant broken" in result.stderr


def test_the_exit_status_of_main_is_kept() -> None:
    assert _run("run_cli(lambda: 3)").returncode == 3
    assert _run("def main():\n    raise UserError('x')\nrun_cli(main)").returncode == 2
