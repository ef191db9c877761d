"""Cost of one incremental update of the default model on this machine (CPU unless CUDA).

    python benchmarks/inference_cost.py --meld DIR [--utterances 300] [--encoder-precision P]
        [--out FILE.json]

Replays MELD dev utterances as one long call and times, per added utterance:

* ``encode_only``: the baseline, embedding the utterance's text and nothing else;
* ``update_from_text``: :meth:`EmotionRecognizer.add_utterance` with text (encoding + the
  rolling update of ``future + 1`` windows);
* ``update_from_features``: the same with the text vector given (what a worker does when
  the streamer already featurised the utterance);
* ``naive_full_conversation``: re-running batch inference over the whole call so far, the
  approach that bounded windows replace (timed on a prefix of the call).

Reports median / p95 milliseconds, the ratio of each to the baseline, and the update cost
early vs late in the call (bounded windows keep it flat).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cberl_model.cli import setup_logging
from cberl_model.data.meld import read_meld_csv
from cberl_model.inference import EmotionRecognizer, UtteranceInput
from cberl_model.runtime import PRECISIONS, configure_threads


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(samples_s)
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "n": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meld", type=Path, required=True, help="folder with MELD's CSVs")
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--naive-prefix", type=int, default=120,
                        help="call length up to which the naive baseline is timed")
    parser.add_argument("--encoder-precision", choices=tuple(PRECISIONS), default="auto",
                        help="the text encoder's serving dtype (default: what a worker serves in)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    setup_logging()
    configure_threads()
    recognizer = EmotionRecognizer.load(precision=args.encoder_precision)
    corpus = read_meld_csv(args.meld / "dev_sent_emo.csv")
    utterances = [UtteranceInput(f"u{i}", u.speaker, text=u.text)
                  for i, u in enumerate(corpus.utterances()) if i < args.utterances]
    encoder = recognizer.artifact.encoder
    assert encoder is not None
    recognizer.featurize(utterances[:8])  # warm-up

    timings: dict[str, list[float]] = {"encode_only": [], "update_from_text": [],
                                       "update_from_features": [], "naive_full_conversation": []}
    with torch.inference_mode():
        for u in utterances:
            started = time.perf_counter()
            encoder.encode([u.text or ""])
            timings["encode_only"].append(time.perf_counter() - started)
    state = recognizer.open_call("bench-text")
    for u in utterances:
        started = time.perf_counter()
        state, _ = recognizer.add_utterance(state, u)
        timings["update_from_text"].append(time.perf_counter() - started)
    vectors = recognizer.featurize(utterances)
    given = [UtteranceInput(u.utterance_id, u.speaker_id, features=v)
             for u, v in zip(utterances, vectors, strict=True)]
    state = recognizer.open_call("bench-features")
    for u in given:
        started = time.perf_counter()
        state, _ = recognizer.add_utterance(state, u)
        timings["update_from_features"].append(time.perf_counter() - started)
    for n in range(1, min(args.naive_prefix, len(given)) + 1):
        started = time.perf_counter()
        recognizer.predict_conversation(given[:n])
        timings["naive_full_conversation"].append(time.perf_counter() - started)

    base = float(np.median(timings["encode_only"]))
    feats = timings["update_from_features"]
    early, late = feats[10:30], feats[-20:]
    naive = timings["naive_full_conversation"]
    result: dict[str, Any] = {
        "device": str(recognizer.device), "threads": torch.get_num_threads(),
        "encoder_dtype": str(encoder.dtype).removeprefix("torch."),
        "model_id": recognizer.model_id, "past": recognizer.past, "future": recognizer.future,
        "timings": {k: _stats(v) for k, v in timings.items()},
        "ratio_to_encode_only": {k: float(np.median(v)) / base for k, v in timings.items()},
        "update_cost_late_over_early": float(np.median(late) / np.median(early)),
        "naive_cost_at_prefix_end_over_start": float(np.median(naive[-10:]) /
                                                     np.median(naive[10:30])),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
