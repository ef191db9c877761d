"""The arithmetic ceiling of the worker's model path on this machine.

    python -m benchmarks.model_ceiling [--batch-sizes 1 4 16 64 256] [--out docs/model_ceiling.json]

A throughput target only makes sense below what the hardware can do. For each micro-batch
size B (B calls pre-filled with ``--warm`` utterances, then one new utterance each, as in
``benchmarks/workers_bench.py``) this measures, in one run:

* the floating-point work of one ``EmotionRecognizer.add_utterances`` call, counted by the
  torch profiler (``with_flops``: every matrix product, which is where the work is);
* its wall time (median of ``--repeats``), hence the rate achieved, in new utterances per
  second and in GFLOP/s;
* this machine's single-precision matrix-product peak at the same thread count, on the
  largest product the model runs and on a large square one;
* the ceiling: peak / (FLOP per new utterance), the most new utterances per second any
  implementation of these products could reach here. Work that does not scale with the
  batch (fusion and LSTM input maps of the stored nodes) is part of the count; the note
  ``essential`` is the part an implementation that cached per-node results across
  micro-batches would still have to do (the per-window products), from the model's shape.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.workers_bench import Corpus
from cberl_model.inference import EmotionRecognizer

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(shapes: list[tuple[int, int, int]], repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of float32 ``(m, k) @ (k, n)`` for each shape, best of ``repeats``."""
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
        out[f"{m}x{k}x{n}"] = round(2 * m * k * n / best / 1e9, 1)
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def essential_flops_per_utterance(recognizer: EmotionRecognizer) -> float:
    """Per-window products a new utterance needs even with every per-node result cached.

    Each new utterance labels ``future + 1`` windows of up to ``past + future + 1`` nodes.
    Per window node: the forward-LSTM state through the folded projection and first graph
    layer (``hidden x 3 dim``) and the last layer's message map (``dim x dim``); the
    backward LSTM restarts at the new end, so its states through the same map count too.
    """
    config = recognizer.model.config
    dim = recognizer.model.project.weight.size(0)
    hidden = recognizer.model.context.hidden_dim
    nodes = (config.future + 1) * (config.past + config.future + 1)
    per_window_node = hidden * 3 * dim + dim * dim
    backward = (config.past + config.future + 1) * hidden * 3 * dim
    return 2.0 * (nodes * per_window_node + backward)


def measure(recognizer: EmotionRecognizer, corpus: Corpus, batch: int, warm: int,
            repeats: int) -> dict[str, Any]:
    calls = [f"ceiling{batch}-{i}" for i in range(batch)]
    inputs = {c: corpus.inputs(c, warm + 1) for c in calls}
    states = {c: recognizer.open_call(c) for c in calls}
    for seq in range(warm):
        results = recognizer.add_utterances([(states[c], inputs[c][seq]) for c in calls])
        states = {c: s for c, (s, _) in zip(calls, results, strict=True)}
    items = [(states[c], inputs[c][warm]) for c in calls]
    featurized = recognizer.featurize([u for _, u in items])
    recognizer.add_utterances(items, featurized)
    times = [_timed(lambda: recognizer.add_utterances(items, featurized)) for _ in range(repeats)]
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        recognizer.add_utterances(items, featurized)
    flops = sum(e.flops for e in prof.key_averages() if e.flops)
    seconds = statistics.median(times)
    return {"batch_size": batch, "gflop_per_batch": round(flops / 1e9, 3),
            "mflop_per_new_utterance": round(flops / batch / 1e6, 2),
            "ms_per_batch": round(1000 * seconds, 2),
            "new_utterances_per_s": round(batch / seconds, 1),
            "achieved_gflop_per_s": round(flops / seconds / 1e9, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meld", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "model_ceiling.json")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--warm", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--target", type=float, default=2000.0, help="new utterances/s at batch 64")
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads)
    recognizer = EmotionRecognizer.load(device="cpu")
    corpus = Corpus(recognizer, args.meld, 400)
    rows = [measure(recognizer, corpus, b, args.warm, args.repeats) for b in args.batch_sizes]
    dim = recognizer.model.project.weight.size(0)
    hidden = recognizer.model.context.hidden_dim
    largest = max(args.batch_sizes)
    window_nodes = largest * (recognizer.future + 1) * (recognizer.past + recognizer.future + 1)
    peak = matmul_peak([(window_nodes, dim, dim), (window_nodes, hidden, 3 * dim), (2048, 2048, 2048)])
    best_peak = max(peak.values())
    essential = essential_flops_per_utterance(recognizer)
    for row in rows:
        per_utterance = row["mflop_per_new_utterance"] * 1e6
        row["ceiling_new_utterances_per_s"] = round(best_peak * 1e9 / per_utterance, 1)
        row["share_of_peak"] = round(row["achieved_gflop_per_s"] / best_peak, 2)
    result = {
        "command": " ".join(["python -m benchmarks.model_ceiling", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "model": repr(recognizer)},
        "matmul_peak_gflop_per_s": peak,
        "essential_mflop_per_new_utterance": round(essential / 1e6, 2),
        "essential_ceiling_new_utterances_per_s": round(best_peak * 1e9 / essential, 1),
        "target_new_utterances_per_s": args.target,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
