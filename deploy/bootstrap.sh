#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at .venv.
# Re-used as is when pyproject.toml and this script have not changed since it was built.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: Python 3.11 or newer is required ($python is $("$python" --version 2>&1))" >&2
    exit 2
fi
"$root/deploy/system-packages.sh"
stamp="$(cat "$root/pyproject.toml" "$root/deploy/bootstrap.sh" "$root/deploy/system-packages.sh" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.cberl-stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
echo "setting up $venv ..." >&2
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# torch first, pinned: CPU wheel on CPU machines, CUDA wheel on GPU machines; an unpinned
# torch (or a package asking for a newer one) would pull a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e "$root[train,dev]"
echo "$stamp" > "$venv/.cberl-stamp"
echo "environment ready: $venv" >&2
