#!/usr/bin/env bash
# The project's run command. Until the live service lands, it trains the MELD model with
# the default recipe (run directory: runs/meld). MELD_DIR points at MELD's CSVs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/deploy/bootstrap.sh"
cd "$root"
meld="${MELD_DIR:-$root/../shared/data/meld}"
if [ ! -f "$meld/train_sent_emo.csv" ] || [ ! -f "$meld/dev_sent_emo.csv" ]; then
    echo "error: MELD CSVs not found in $meld (set MELD_DIR to the folder holding" \
         "train_sent_emo.csv and dev_sent_emo.csv)" >&2
    exit 2
fi
exec "$root/.venv/bin/python" -m cberl_model.train --config cberl_model/recipes/meld.toml \
    --train "meld:$meld/train_sent_emo.csv" --dev "meld:$meld/dev_sent_emo.csv" \
    --run-dir runs/meld "$@"
