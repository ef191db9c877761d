#!/usr/bin/env bash
# The project's run command: set up .venv if needed, then start the embedded stack on
# 127.0.0.1 (tansu broker, redis-server, a recognizer worker with the bundled default model,
# the streamer and its web page). Ctrl-C stops everything. Flags: python -m deploy.embedded --help
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/deploy/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" -m deploy.embedded "$@"
