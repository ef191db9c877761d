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

    python benchmarks/quality.py --cv 3 --meld DIR [--emorynlp DIR] [--variants utterance context1]
        [--cv-seeds 0] [--out docs/quality_cv.json] [--report-only]

``--cv K``: selection that generalizes. Train and dev are pooled and split into K folds
of whole conversations (seed 0; the assignment is written to ``docs/cv_folds.json``); each
fold is scored by models trained on the other folds (an inner 10 % of their conversations
picks epochs and stops training; :mod:`cberl_model.train.crossval`). Every variant (the
recipe with :data:`CV_VARIANTS`' settings on top) reports mean +- std over folds (x seeds)
of weighted F1, macro F1 and every class's F1 for: the per-utterance fine-tuned baseline
(stage 1, measured in the same run), CBERL revision 0 and final, each also with class-prior
correction (per-class logit biases fitted on the *other* folds' out-of-fold logits;
:mod:`cberl_model.train.prior`). Beside the CV means: the same out-of-fold predictions on
the original dev conversations. The winner is the deployable system (CBERL final, with or
without correction) with the highest CV mean weighted F1; the bias to ship is fitted on all
folds. Resumable: each fold's result (summary JSON + out-of-fold logits, a few hundred KB)
is stored under a hash of its configuration in ``--cv-results`` (committed, so a CV that
takes hours survives between machines); ``--report-only`` trains nothing. Folds run one after another in this
process (one torch thread); run two invocations with different ``--variants`` to use 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from cberl_model.augment.asr_text import (
    exclamations_as_periods,
    heard_by_streamer,
    rewrite_texts,
    streamer_transcriber_id,
)
from cberl_model.cli import setup_logging
from cberl_model.data import load_corpus
from cberl_model.features.corpus_features import corpus_spec, featurize_corpus
from cberl_model.features.text_encoder import TextEncoder
from cberl_model.metrics import classification_report
from cberl_model.runtime import default_cache_dir
from cberl_model.train.config import MINILM_ENCODER, TrainConfig
from cberl_model.train.crossval import (
    assignment_hash,
    fold_assignment,
    fold_key,
    pooled_corpus,
    run_fold,
)
from cberl_model.train.pipeline import run_training
from cberl_model.train.prior import bias_spec, fit_bias, probabilities

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


MPNET_UTTERANCE: dict[str, Any] = {
    "encoder_context_turns": 0, "encoder_max_tokens": 64,
    "text_model": "parts:all-mpnet-base-v2", "encoder_lora_rank": 8, "encoder_bf16": True}
"""The mpnet encoder on the utterance alone, the base of the mpnet variants."""

CV_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "utterance": ("recipe with MiniLM, encoder sees the utterance alone",
                  {**MINILM_ENCODER, "encoder_context_turns": 0, "encoder_max_tokens": 64}),
    "context1": ("recipe with MiniLM, encoder sees the previous turn (speaker names)",
                 {**MINILM_ENCODER, "encoder_context_turns": 1, "encoder_max_tokens": 128}),
    "context2": ("recipe with MiniLM, encoder sees the 2 previous turns (speaker names)",
                 {**MINILM_ENCODER, "encoder_context_turns": 2, "encoder_max_tokens": 160}),
    "utterance_asr50": ("utterance, half the training texts as the streamer's ASR hears them",
                        {**MINILM_ENCODER, "encoder_context_turns": 0, "encoder_max_tokens": 64,
                         "asr_fraction": 0.5}),
    "mpnet": ("utterance, all-mpnet-base-v2 (768-d, LoRA rank 8 on q, v) instead of MiniLM",
              MPNET_UTTERANCE),
    "mpnet_excl50": ("mpnet, half the training texts with every '!' written '.' (Whisper drops them)",
                     {**MPNET_UTTERANCE, "exclamation_fraction": 0.5}),
}
"""Levers measured by ``--cv``: the corpus's recipe with these settings on top (spelled out,
so a recipe that adopts a lever re-defines no variant)."""

CV_ENSEMBLES: dict[str, tuple[str, ...]] = {
    "mpnet + utterance": ("mpnet", "utterance"),
    "mpnet + utterance + context1": ("mpnet", "utterance", "context1"),
}
"""Ensembles scored after the fact on the variants' out-of-fold logits (:func:`cv_ensembles`):
their CBERL final members' probabilities averaged. Serving one costs the sum of its
members (each its own encoder and CBERL network)."""

FOLD_SEED = 0
"""Seed of the fold assignment: the folds stay fixed across runs, variants and seeds."""


def cv_corpus(corpus: str, folder: Path):
    """The pooled train+dev corpus of one standard corpus."""
    fmt, train_file, dev_file, _ = CORPORA[corpus]
    return pooled_corpus(corpus, {"train": load_corpus(f"{fmt}:{folder / train_file}"),
                                  "dev": load_corpus(f"{fmt}:{folder / dev_file}")})


def cv_config(corpus: str, variant: str, seed: int) -> TrainConfig:
    """The recipe of ``corpus`` with a variant's settings, seeded."""
    return TrainConfig.from_file(RECIPES / f"{corpus}.toml").updated({
        **CV_VARIANTS[variant][1], "seed": seed, "encoder_seed": seed, "progress": False})


def cv_run(corpus: str, folder: Path, variants: list[str], seeds: list[int], folds: int,
           results: Path, train: bool, only: set[int] | None = None) -> dict[str, Any]:
    """Run (or only collect) every fold of every variant and seed; returns the fold results.

    ``only``: train just these folds (others are collected when finished), so that several
    processes can share one CV, one fold each."""
    pooled = cv_corpus(corpus, folder)
    assignment = fold_assignment(pooled, folds, FOLD_SEED)
    results.mkdir(parents=True, exist_ok=True)
    collected: dict[str, Any] = {"assignment": assignment, "labels": list(pooled.labels),
                                 "variants": {}}
    for variant in variants:
        runs = []
        for seed in seeds:
            config = cv_config(corpus, variant, seed)
            for fold in range(folds):
                key = fold_key(config, pooled, assignment, fold, 0.1)
                stem = results / f"{corpus}-{variant}-s{seed}-f{fold}-{key}"
                if not stem.with_suffix(".json").is_file():
                    if not train or (only is not None and fold not in only):
                        log.info("missing: %s", stem.name)
                        continue
                    log.info("cv %s %s seed %d fold %d/%d", corpus, variant, seed, fold + 1, folds)
                    summary, arrays = run_fold(config, pooled, assignment, fold, 0.1)
                    np.savez_compressed(stem.with_suffix(".npz"), **arrays)
                    summary.update(variant=variant, seed=seed, key=key)
                    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
                arrays = dict(np.load(stem.with_suffix(".npz")))
                runs.append({"summary": json.loads(stem.with_suffix(".json").read_text()),
                             "arrays": arrays, "seed": seed, "fold": fold})
        collected["variants"][variant] = runs
    return collected


def _scores(y: np.ndarray, logits: np.ndarray, labels: tuple[str, ...],
            bias: np.ndarray | None = None) -> dict[str, Any]:
    return classification_report(y, probabilities(logits, bias).argmax(1), labels)


def cv_summary(collected: dict[str, Any], expected: int | None = None) -> dict[str, Any]:
    """Per variant and system: mean +- std over folds (x seeds), the dev part, the biases.

    ``expected`` (folds x seeds) marks a variant ``complete`` when all of them finished.
    """
    labels = tuple(collected["labels"])
    out: dict[str, Any] = {}
    for variant, runs in collected["variants"].items():
        if not runs:
            continue
        systems: dict[str, list[dict[str, Any]]] = {}
        dev_rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        biases: dict[str, list[str]] = {"baseline": [], "final": []}
        for run in runs:
            others = [r for r in runs if r["seed"] == run["seed"] and r["fold"] != run["fold"]]
            a = run["arrays"]
            y = a["y"]
            nested = {}
            for source in ("baseline", "final"):
                if source in a and others and all(source in r["arrays"] for r in others):
                    logits = np.concatenate([r["arrays"][source] for r in others],
                                            axis=-2)
                    nested[source] = fit_bias(logits, np.concatenate(
                        [r["arrays"]["y"] for r in others]), labels)
                    biases[source].append(bias_spec(nested[source], labels))
            rows = {}
            if "baseline" in a:
                rows["per-utterance fine-tuned (baseline)"] = (a["baseline"], None)
                if "baseline" in nested:
                    rows["per-utterance fine-tuned + prior correction"] = (a["baseline"],
                                                                           nested["baseline"])
            rows["CBERL revision 0"] = (a["revision0"], None)
            rows["CBERL final"] = (a["final"], None)
            if "final" in nested:
                rows["CBERL revision 0 + prior correction"] = (a["revision0"], nested["final"])
                rows["CBERL final + prior correction"] = (a["final"], nested["final"])
            dev = np.char.startswith(a["conversation"].astype(str), "dev/")
            for system, (logits, bias) in rows.items():
                systems.setdefault(system, []).append(_scores(y, logits, labels, bias))
                if run["seed"] == runs[0]["seed"]:
                    pred = probabilities(logits, bias).argmax(1)
                    dev_rows.setdefault(system, []).append((y[dev], pred[dev]))
        block: dict[str, Any] = {"description": CV_VARIANTS[variant][0],
                                 "settings": CV_VARIANTS[variant][1],
                                 "folds_x_seeds": len(runs),
                                 "complete": expected is None or len(runs) >= expected,
                                 "systems": {}}
        for system, reports in systems.items():
            cells = {"weighted_f1": [r["weighted_f1"] for r in reports],
                     "macro_f1": [r["macro_f1"] for r in reports],
                     **{f"{c}_f1": [r["per_class"][c]["f1"] for r in reports] for c in labels}}
            y_dev = np.concatenate([d[0] for d in dev_rows[system]])
            p_dev = np.concatenate([d[1] for d in dev_rows[system]])
            block["systems"][system] = {
                "cv": {k: {"mean": 100 * float(np.mean(v)), "std": 100 * float(np.std(v)),
                           "n": len(v)} for k, v in cells.items()},
                "dev_part": classification_report(y_dev, p_dev, labels) if len(y_dev) else None,
                "folds": reports,
            }
        pooled = {}
        seed0 = [r for r in runs if r["seed"] == runs[0]["seed"]]
        for source in ("baseline", "final"):
            if all(source in r["arrays"] for r in seed0):
                pooled[source] = bias_spec(fit_bias(
                    np.concatenate([r["arrays"][source] for r in seed0], axis=-2),
                    np.concatenate([r["arrays"]["y"] for r in seed0]), labels), labels)
        block["logit_bias"] = {"fitted_on_all_folds": pooled, "nested_per_fold": biases}
        block["seconds_per_fold"] = float(np.mean([r["summary"]["seconds"] for r in runs]))
        out[variant] = block
    return out


def cv_ensembles(collected: dict[str, Any]) -> dict[str, Any]:
    """Each :data:`CV_ENSEMBLES` entry whose variants all finished a fold: mean +- std over
    the folds (x seeds) they share of weighted, macro and every class's F1."""
    labels = tuple(collected["labels"])
    out: dict[str, Any] = {}
    for name, variants in CV_ENSEMBLES.items():
        runs = [{(r["seed"], r["fold"]): r["arrays"] for r in collected["variants"].get(v, [])}
                for v in variants]
        shared = sorted(set.intersection(*(set(r) for r in runs)))
        reports = []
        for key in shared:
            parts = [r[key] for r in runs]
            if not all(np.array_equal(p["y"], parts[0]["y"]) for p in parts):
                raise ValueError(f"{name}: fold {key} holds different utterances per variant")
            reports.append(_scores(parts[0]["y"], np.concatenate([p["final"] for p in parts]),
                                   labels))
        if reports:
            cells = {"weighted_f1": [r["weighted_f1"] for r in reports],
                     "macro_f1": [r["macro_f1"] for r in reports],
                     **{f"{c}_f1": [r["per_class"][c]["f1"] for r in reports] for c in labels}}
            out[name] = {"variants": list(variants), "folds_x_seeds": len(reports),
                         "cv": {k: {"mean": 100 * float(np.mean(v)), "std": 100 * float(np.std(v)),
                                    "n": len(v)} for k, v in cells.items()}}
    return out


def cv_winner(summary: dict[str, Any]) -> dict[str, Any]:
    """The deployable system with the highest CV mean weighted F1 (CBERL final, +- prior).

    Only variants whose every fold finished compete (a partial CV chooses nothing).
    """
    best = None
    for variant, block in summary.items():
        if not block.get("complete", True):
            continue
        for system in ("CBERL final", "CBERL final + prior correction"):
            if system in block["systems"]:
                score = block["systems"][system]["cv"]["weighted_f1"]["mean"]
                if best is None or score > best[0]:
                    best = (score, variant, system)
    if best is None:
        return {}
    score, variant, system = best
    bias = (summary[variant]["logit_bias"]["fitted_on_all_folds"].get("final", "")
            if system.endswith("prior correction") else "")
    return {"variant": variant, "system": system, "weighted_f1": score,
            "settings": {**CV_VARIANTS[variant][1], "logit_bias": bias}}


def cv_markdown(report: dict[str, Any]) -> str:
    """Per corpus: one table of CV mean +- std (every class), then the dev part beside it."""
    out = []
    for corpus, block in report["corpora"].items():
        labels = block["labels"]
        cols = ["weighted_f1", "macro_f1", *(f"{c}_f1" for c in labels)]
        out.append(f"### {corpus}: {report['folds']}-fold CV by conversation over train+dev\n")
        out.append(f"Mean ± std over folds × seeds {report['seeds']} (F1, %); folds: "
                   f"`docs/cv_folds.json` (hash {block['folds_hash']}).\n")
        if not block["summary"]:
            out.append("No fold has finished yet (`--report-only` lists the missing ones).\n")
            continue
        out.append("| variant | system | " + " | ".join(c.replace("_f1", "").replace("_", " ")
                                                     for c in cols) + " |")
        out.append("|---|---" + "|---" * len(cols) + "|")
        for variant, vb in block["summary"].items():
            for system, sb in vb["systems"].items():
                cells = [f"{sb['cv'][c]['mean']:.2f} ± {sb['cv'][c]['std']:.2f}" for c in cols]
                out.append(f"| {variant} | {system} | " + " | ".join(cells) + " |")
        out.append("")
        out.append(f"#### {corpus}: the same out-of-fold predictions on the dev conversations\n")
        out.append("| variant | system | weighted | macro | " + " | ".join(labels) + " |")
        out.append("|---|---|---|---" + "|---" * len(labels) + "|")
        for variant, vb in block["summary"].items():
            for system, sb in vb["systems"].items():
                d = sb["dev_part"]
                if d is None:
                    continue
                cells = [f"{100 * d['weighted_f1']:.2f}", f"{100 * d['macro_f1']:.2f}",
                         *(f"{100 * d['per_class'][c]['f1']:.2f}" for c in labels)]
                out.append(f"| {variant} | {system} | " + " | ".join(cells) + " |")
        out.append("")
        for variant, vb in block["summary"].items():
            partial = "" if vb.get("complete", True) else " **partial**"
            out.append(f"- `{variant}` ({vb['description']}; {vb['folds_x_seeds']} folds×seeds"
                       f"{partial}, "
                       f"{vb['seconds_per_fold'] / 60:.1f} min per fold): logit bias fitted on "
                       f"all folds: `{vb['logit_bias']['fitted_on_all_folds'].get('final', '')}`")
        if block.get("ensembles"):
            out.append(f"\n#### {corpus}: ensembles of CBERL final, out of fold "
                       "(the members' probabilities averaged; serving costs their sum)\n")
            out.append("| ensemble | folds×seeds | " + " | ".join(
                c.replace("_f1", "").replace("_", " ") for c in cols) + " |")
            out.append("|---|---" + "|---" * len(cols) + "|")
            for name, eb in block["ensembles"].items():
                cells = [f"{eb['cv'][c]['mean']:.2f} ± {eb['cv'][c]['std']:.2f}" for c in cols]
                out.append(f"| {name} | {eb['folds_x_seeds']} | " + " | ".join(cells) + " |")
            out.append("")
        winner = block["winner"]
        if not winner:
            out.append("- **CV winner**: none yet (no variant has finished every fold)")
        if winner:
            out.append(f"- **CV winner**: `{winner['variant']}`, {winner['system']} "
                       f"({winner['weighted_f1']:.2f} mean weighted F1); settings "
                       f"`{json.dumps(winner['settings'])}`")
        out.append("")
    return "\n".join(out)


def cv_main(args: argparse.Namespace) -> int:
    """``--cv K``: run what is missing (unless ``--report-only``), then report."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    corpora = {c: f for c, f in (("meld", args.meld), ("emorynlp", args.emorynlp)) if f}
    out_path = args.out if args.out != Path("docs/quality.json") else Path("docs/quality_cv.json")
    folds_path = out_path.parent / "cv_folds.json"
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    report: dict[str, Any] = {"folds": args.cv, "seeds": args.cv_seeds, "fold_seed": FOLD_SEED,
                              "inner_fraction": 0.1,
                              "corpora": dict(previous.get("corpora", {}))}
    folds_record = json.loads(folds_path.read_text()) if folds_path.is_file() else {}
    for corpus, folder in corpora.items():
        collected = cv_run(corpus, folder, args.variants, args.cv_seeds, args.cv,
                           args.cv_results, not args.report_only,
                           set(args.folds) if args.folds else None)
        summary = cv_summary(collected, args.cv * len(args.cv_seeds))
        old = report["corpora"].get(corpus, {}).get("summary", {})
        summary = {**{k: v for k, v in old.items() if k not in summary}, **summary}
        report["corpora"][corpus] = {"labels": collected["labels"],
                                     "folds_hash": assignment_hash(collected["assignment"]),
                                     "summary": summary, "winner": cv_winner(summary),
                                     "ensembles": cv_ensembles(collected)}
        folds_record[corpus] = {"folds": args.cv, "seed": FOLD_SEED,
                                "hash": assignment_hash(collected["assignment"]),
                                "conversations": collected["assignment"]}
    for block in report["corpora"].values():  # fold-level reports stay in the JSON only
        for vb in block["summary"].values():
            for sb in vb["systems"].values():
                sb.pop("folds_detail", None)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    folds_path.write_text(json.dumps(folds_record, indent=0, sort_keys=True) + "\n")
    out_path.with_suffix(".md").write_text(cv_markdown(report))
    print(cv_markdown(report))
    return 0


def plain_words(text: str) -> str:
    """Lower case, no punctuation (apostrophes kept): the words alone."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


GOLD_VIEWS: dict[str, tuple[str, Callable[[str], str]]] = {
    "gold_no_exclamation": ("gold, ! as .", exclamations_as_periods),
    "gold_plain": ("gold, words only", plain_words),
}
"""Gold dev with what ASR of espeak-ng speech loses, one step at a time, to split the
gold-to-ASR drop: Whisper writes 10 of MELD dev's 349 exclamation marks (and half its
question marks); the words alone lose case and every mark."""


def asr_dev_main(args: argparse.Namespace) -> int:
    """``--asr-dev``: each model on gold dev and on what ASR hears of dev, same utterances."""
    import torch

    from cberl_model.artifact import load_artifact
    from cberl_model.predict import evaluate_conversations

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    corpora = {c: f for c, f in (("meld", args.meld), ("emorynlp", args.emorynlp)) if f}
    out: dict[str, Any] = {"asr": streamer_transcriber_id(), "voices": "cberl_model.augment.asr_text.VOICES",
                           "views": {k: v[0] for k, v in GOLD_VIEWS.items()}, "corpora": {}}
    for corpus, folder in corpora.items():
        fmt, _, dev_file, _ = CORPORA[corpus]
        gold = load_corpus(f"{fmt}:{folder / dev_file}")
        views = {"gold": gold, **{k: rewrite_texts(gold, f, "+" + k) for k, (_, f) in GOLD_VIEWS.items()},
                 "asr": heard_by_streamer(gold, default_cache_dir())}
        rows = {}
        for model_dir in args.models.get(corpus, []):
            artifact = load_artifact(Path(model_dir))
            device = next(artifact.model.parameters()).device
            row = {"model_id": artifact.model_id}
            for name, data in views.items():
                feats = featurize_corpus(data, artifact.feature_spec, artifact.encoder,
                                         default_cache_dir(), labels=artifact.labels)
                for rev, future in (("final", artifact.model.config.future), ("revision0", 0)):
                    row[f"{name}_{rev}"], _, _ = evaluate_conversations(
                        artifact.model, feats, artifact.labels, future, device)
            rows[str(model_dir)] = row
        out["corpora"][corpus] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(asr_dev_markdown(out))
    print(asr_dev_markdown(out))
    return 0


def asr_dev_markdown(out: dict[str, Any]) -> str:
    """The ``--asr-dev`` table: weighted F1 per text view, and the gold-to-ASR drop."""
    def f1(row: dict[str, Any], name: str) -> float:
        return 100 * row[f"{name}_final"]["weighted_f1"]

    lines = []
    for corpus, rows in out["corpora"].items():
        views = [label for label, _ in GOLD_VIEWS.values()]
        lines += [f"### {corpus} dev: gold text vs ASR text (espeak-ng voices, Whisper as the "
                  f"streamer runs it)\n",
                  "| model | gold wF1 | " + " | ".join(f"{v} wF1" for v in views)
                  + " | ASR wF1 | drop | gold rev0 | ASR rev0 | agreement drop (acc) |",
                  "|---" * (7 + len(views)) + "|"]
        for model_dir, r in rows.items():
            g, a = r["gold_final"], r["asr_final"]
            lines.append(f"| `{model_dir}` ({r['model_id']}) | {f1(r, 'gold'):.2f} | "
                         + "".join(f"{f1(r, k):.2f} | " for k in GOLD_VIEWS)
                         + f"{f1(r, 'asr'):.2f} | {f1(r, 'gold') - f1(r, 'asr'):.2f} | "
                         f"{100 * r['gold_revision0']['weighted_f1']:.2f} | "
                         f"{100 * r['asr_revision0']['weighted_f1']:.2f} | "
                         f"{100 * (g['accuracy'] - a['accuracy']):.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meld", type=Path, help="folder with MELD's CSVs")
    parser.add_argument("--emorynlp", type=Path, help="folder with EmoryNLP's CSVs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/quality"))
    parser.add_argument("--out", type=Path, default=Path("docs/quality.json"))
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="K-fold cross-validation by conversation over train+dev (K >= 3)")
    parser.add_argument("--variants", nargs="+", default=["utterance"],
                        choices=sorted(CV_VARIANTS), help="--cv: the levers to measure")
    parser.add_argument("--cv-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cv-results", type=Path, default=Path("docs/quality_cv_folds"),
                        help="--cv: where each fold's result is kept (resumable)")
    parser.add_argument("--folds", type=int, nargs="+", metavar="F",
                        help="--cv: train only these folds (0-based), e.g. one per process")
    parser.add_argument("--report-only", action="store_true",
                        help="--cv: train nothing, report the folds finished so far")
    parser.add_argument("--asr-dev", action="store_true",
                        help="score --model-dirs on gold dev and on ASR'd dev (writes --out)")
    parser.add_argument("--meld-models", nargs="*", default=["cberl_model/default_model"])
    parser.add_argument("--emorynlp-models", nargs="*", default=[])
    args = parser.parse_args()
    setup_logging()
    if args.asr_dev:
        args.models = {"meld": args.meld_models, "emorynlp": args.emorynlp_models}
        if args.out == Path("docs/quality.json"):
            args.out = Path("docs/quality_asr.json")
        return asr_dev_main(args)
    if args.cv:
        if args.cv < 3:
            parser.error("--cv needs K >= 3")
        if args.folds and not all(0 <= f < args.cv for f in args.folds):
            parser.error(f"--folds must be in 0..{args.cv - 1}")
        return cv_main(args)
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
