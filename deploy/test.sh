#!/usr/bin/env bash
# The project's test command: set up .venv if needed, lint, then run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/deploy/bootstrap.sh"
cd "$root"
"$root/.venv/bin/ruff" check .  # findings fail the run, like a failing test
exec "$root/.venv/bin/python" -m pytest "$@"
