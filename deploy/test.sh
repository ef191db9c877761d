#!/usr/bin/env bash
# The project's test command: set up .venv if needed, then run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/deploy/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
