"""Model quality on dev: CBERL over several seeds against two per-utterance baselines.

    python benchmarks/quality.py --meld DIR --emorynlp DIR [--seeds 0 1 2] [--out docs/quality.json]

The corpora are trained in parallel, one process and one torch thread each (on 2 cores
this is faster than two threads per run, one corpus at a time). Each seed also seeds the
encoder adaptation and its cross-fitting folds, so the spread covers every stage.

For each corpus it trains the recipe of ``cberl_model/recipes/<corpus>.toml`` once per seed
and reports dev weighted F1, accuracy, macro F1 and the minority classes' F1 as mean and
standard deviation, for the final labels and the revision-0 (no look-ahead) labels, next
to two baselines on the same encoder and splits:

* ``logreg-frozen``: logistic regression on the frozen sentence embeddings, one utterance
  at a time (no context);
* ``finetuned-utterance``: the encoder adapted (LoRA) with a linear head, one utterance at
  a time - the trainer's stage 1, measured on dev before any context is added.

Writes JSON (every run's full report) and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from cberl_model.cli import setup_logging
from cberl_model.data import load_corpus
from cberl_model.features.corpus_features import corpus_spec, featurize_corpus
from cberl_model.features.text_encoder import TextEncoder
from cberl_model.metrics import classification_report
from cberl_model.runtime import default_cache_dir
from cberl_model.train.config import TrainConfig
from cberl_model.train.pipeline import run_training

log = logging.getLogger("benchmarks.quality")
RECIPES = Path(__file__).resolve().parents[1] / "cberl_model" / "recipes"
CORPORA = {
    "meld": ("meld", "train_sent_emo.csv", "dev_sent_emo.csv", ("fear", "disgust")),
    "emorynlp": ("emorynlp", "emorynlp_train_final.csv", "emorynlp_dev_final.csv",
                 ("scared", "sad", "powerful")),
}


def logreg_baseline(train_spec: str, dev_spec: str) -> dict[str, Any]:
    """Logistic regression on frozen MiniLM embeddings, one utterance at a time."""
    train, dev = load_corpus(train_spec), load_corpus(dev_spec)
    encoder = TextEncoder()
    spec = corpus_spec(train, encoder)
    feats = {name: featurize_corpus(c, spec, encoder, default_cache_dir(), labels=train.labels)
             for name, c in (("train", train), ("dev", dev))}
    x = {k: np.concatenate([c.features["text"] for c in v]) for k, v in feats.items()}
    y = {k: np.concatenate([c.labels for c in v]) for k, v in feats.items()}
    classifier = LogisticRegression(max_iter=3000, C=1.0).fit(x["train"], y["train"])
    return classification_report(y["dev"], classifier.predict(x["dev"]), train.labels)


def summarise(reports: list[dict[str, Any]], minority: tuple[str, ...]) -> dict[str, Any]:
    """Mean and standard deviation (over seeds) of the headline numbers, in percent."""
    rows = {
        "weighted_f1": [r["weighted_f1"] for r in reports],
        "accuracy": [r["accuracy"] for r in reports],
        "macro_f1": [r["macro_f1"] for r in reports],
        **{f"{m}_f1": [r["per_class"][m]["f1"] for r in reports] for m in minority},
    }
    return {k: {"mean": 100 * float(np.mean(v)), "std": 100 * float(np.std(v)), "n": len(v)}
            for k, v in rows.items()}


def markdown(results: dict[str, Any]) -> str:
    """One table per corpus: systems as rows, mean +- std as cells."""
    out = []
    for corpus, block in results["corpora"].items():
        minority = CORPORA[corpus][3]
        cols = ["weighted_f1", "accuracy", "macro_f1", *(f"{m}_f1" for m in minority)]
        out.append(f"### {corpus} dev\n")
        out.append("| system | " + " | ".join(c.replace("_", " ") for c in cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for system, summary in block["summary"].items():
            cells = [f"{summary[c]['mean']:.2f}" + (f" ± {summary[c]['std']:.2f}"
                                                     if summary[c]["n"] > 1 else "")
                     for c in cols]
            out.append(f"| {system} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def run_corpus(corpus: str, folder: Path, seeds: list[int], runs_dir: Path) -> dict[str, Any]:
    """Train every seed of one corpus and score the baselines (runs in a worker process)."""
    setup_logging()
    fmt, train_file, dev_file, minority = CORPORA[corpus]
    train_spec, dev_spec = f"{fmt}:{folder / train_file}", f"{fmt}:{folder / dev_file}"
    runs = []
    for seed in seeds:
        config = TrainConfig.from_file(RECIPES / f"{corpus}.toml").updated({
            "seed": seed, "encoder_seed": seed, "train": train_spec, "dev": dev_spec,
            "progress": False, "run_dir": str(runs_dir / f"{corpus}-seed{seed}")})
        log.info("training %s seed %d", corpus, seed)
        runs.append(run_training(config))
    logreg = logreg_baseline(train_spec, dev_spec)
    return {
        "summary": {
            "logreg-frozen (no context)": summarise([logreg], minority),
            "finetuned-utterance (no context)": summarise(
                [r["encoder_stage_dev"] for r in runs], minority),
            "CBERL revision 0 (past only)": summarise([r["dev_revision0"] for r in runs], minority),
            "CBERL final": summarise([r["dev"] for r in runs], minority),
        },
        "runs": [{k: r[k] for k in ("dev", "dev_revision0", "encoder_stage_dev", "best_epoch",
                                    "train_seconds", "peak_rss_mb")} for r in runs],
        "logreg": logreg,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meld", type=Path, help="folder with MELD's CSVs")
    parser.add_argument("--emorynlp", type=Path, help="folder with EmoryNLP's CSVs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/quality"))
    parser.add_argument("--out", type=Path, default=Path("docs/quality.json"))
    args = parser.parse_args()
    setup_logging()
    results: dict[str, Any] = {"seeds": args.seeds, "corpora": {}}
    started = time.perf_counter()
    jobs = {c: f for c, f in (("meld", args.meld), ("emorynlp", args.emorynlp)) if f is not None}
    if not jobs:
        parser.error("give --meld and/or --emorynlp")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers: one core each
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {c: pool.submit(run_corpus, c, f, args.seeds, args.runs) for c, f in jobs.items()}
        for corpus, future in futures.items():
            results["corpora"][corpus] = future.result()
    results["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
