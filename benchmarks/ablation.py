"""What each part of CBERL buys: the ablation and the sensitivity sweeps, on dev, over seeds.

    python benchmarks/ablation.py --meld DIR --emorynlp DIR [--seeds 0 1 2] [--jobs 2]
    python benchmarks/ablation.py --meld DIR --emorynlp DIR --sweep focal_gamma=0,0.5,1,2,5 \\
        --sweep mask_rate=0,0.15,0.3,0.5 --out docs/sensitivity

Every variant is the corpus's recipe (``cberl_model/recipes/<corpus>.toml``) with the
paper's full imbalance machinery switched on (``FULL``: GAN augmentation, focal loss
gamma 2, masked reconstruction) and then one thing changed; ``masked-rec-only`` keeps only
masked reconstruction (the default recipe before this ablation) and ``plain`` switches all
three attacks on imbalance off at once (the paper's claim is ``full`` against it). The
recipe supplies everything else (windows, learning rate, class weights, epochs) except the
encoder and its input, pinned to what the committed results used (``MEASURED_ON``). Sweeps
vary one setting of the full model at a time.

Resumable: each run's dev report is written to ``RUNS/results/`` as soon as it finishes,
named by a hash of its exact configuration; a later invocation skips every run whose
configuration was already run (so changing ``--epochs`` or ``--set`` re-runs, and a sweep
point equal to the full model reuses the ablation's run). Runs of one
corpus and seed form a chain executed in order in one process (the first adapts the text
encoder, the rest reuse its cache); chains run ``--jobs`` at a time, one torch thread each.

Writes ``OUT.json`` (every run's report), ``OUT.md`` (mean +- std of weighted F1, macro
F1 and the minority classes' F1) and ``OUT_per_class.png`` (per-class F1 bars) for the
ablation, or ``OUT.png`` (metric vs setting) for sweeps. The ablation's Markdown ends with
the variant that wins on dev (:func:`best_variant`, the rule for the default recipe) and
the full-vs-plain gains. ``--report-only`` writes all of it from the runs finished so far,
naming the ones still missing, without training anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.ablation")
RECIPES = Path(__file__).resolve().parents[1] / "cberl_model" / "recipes"

FULL: dict[str, Any] = {"augment": "gan", "focal_gamma": 2.0, "mask_rate": 0.15,
                        "target_mask_rate": 0.0, "reconstruction_weight": 0.3,
                        "fusion": "djvae", "ensemble_members": 5, "use_graph": True}
"""The paper's full model on top of a recipe: GAN augmentation, focal loss, masked
reconstruction, DJVAE fusion, the ensemble and the graph. Every setting a variant changes
is spelled out, so that no variant changes when a recipe does (a recipe the ablation
chose, e.g. concatenation for EmoryNLP, must not re-define, and so re-run, the ablation)."""

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "full": ("full model (GAN, focal, masked rec., DJVAE, ensemble, graph)", FULL),
    "no-gan": ("without GAN", {**FULL, "augment": "none"}),
    "oversample": ("GAN -> random oversampling", {**FULL, "augment": "oversample"}),
    "smote": ("GAN -> SMOTE", {**FULL, "augment": "smote"}),
    "classweight": ("GAN -> balanced class weights", {**FULL, "augment": "classweight"}),
    "cross-entropy": ("cross-entropy instead of focal", {**FULL, "focal_gamma": 0.0}),
    "no-masked-rec": ("without masked reconstruction",
                      {**FULL, "mask_rate": 0.0, "target_mask_rate": 0.0,
                       "reconstruction_weight": 0.0}),
    "concat-fusion": ("concatenation instead of DJVAE", {**FULL, "fusion": "concat"}),
    "single-classifier": ("one classifier instead of the ensemble", {**FULL, "ensemble_members": 1}),
    "no-graph": ("without the graph (Bi-LSTM only)", {**FULL, "use_graph": False}),
    "masked-rec-only": ("masked reconstruction only (no GAN, CE)",
                        {**FULL, "augment": "none", "focal_gamma": 0.0}),
    "plain": ("none of the three (no GAN, CE, no masked rec.)",
              {**FULL, "augment": "none", "focal_gamma": 0.0, "mask_rate": 0.0,
               "target_mask_rate": 0.0, "reconstruction_weight": 0.0}),
}
"""``plain`` answers the paper's claim: ``full`` minus ``plain`` is what the three attacks on
imbalance buy together (both keep the recipe's mild class weights, as every variant does)."""

MEASURED_ON: dict[str, Any] = {"logit_bias": "", "asr_fraction": 0.0, "encoder_context_turns": 0}
"""What every run keeps whatever the recipe says, with the MiniLM encoder
(``MINILM_ENCODER``) the committed results were measured on: the ablation weighs CBERL's
parts on a fixed encoder, its input and raw logits (the levers chosen later by
cross-validation, ``benchmarks/quality.py --cv``, stay out of it)."""

CLAIM = ("full", "plain")
"""The comparison behind the paper's minority-class claim: (with, without) the machinery."""


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus to run on: its train/dev specs (``FORMAT:PATH``) and the classes to report."""

    name: str
    train: str
    dev: str
    minority: tuple[str, ...]
    recipe: Path | None = None


def standard_corpora(meld: Path | None, emorynlp: Path | None) -> list[CorpusSpec]:
    """MELD and EmoryNLP from their folders; minority = each corpus's two rarest classes."""
    out = []
    if meld is not None:
        out.append(CorpusSpec("meld", f"meld:{meld / 'train_sent_emo.csv'}",
                              f"meld:{meld / 'dev_sent_emo.csv'}", ("fear", "disgust"),
                              RECIPES / "meld.toml"))
    if emorynlp is not None:
        out.append(CorpusSpec("emorynlp", f"emorynlp:{emorynlp / 'emorynlp_train_final.csv'}",
                              f"emorynlp:{emorynlp / 'emorynlp_dev_final.csv'}", ("sad", "powerful"),
                              RECIPES / "emorynlp.toml"))
    return out


@dataclass(frozen=True)
class Job:
    """One training run."""

    corpus: CorpusSpec
    variant: str
    seed: int
    settings: dict[str, Any] = field(hash=False)

    @property
    def key(self) -> str:
        return f"{self.corpus.name}__{self.variant}__seed{self.seed}"


def job_config(job: Job, runs_dir: Path) -> dict[str, Any]:
    """The run's full configuration (recipe, then the variant's settings, then the seed)."""
    from cberl_model.train.config import MINILM_ENCODER, TrainConfig

    base = TrainConfig.from_file(job.corpus.recipe) if job.corpus.recipe else TrainConfig()
    config = base.updated({**MINILM_ENCODER, **MEASURED_ON, **job.settings, "seed": job.seed,
                           "encoder_seed": job.seed, "train": job.corpus.train,
                           "dev": job.corpus.dev, "progress": False,
                           "run_dir": str(runs_dir / job.corpus.name / job.variant / f"seed{job.seed}")})
    return config.to_dict()


def _fingerprint(config: dict[str, Any]) -> str:
    """Hash of what determines a run's result (not where it writes or whether it prints)."""
    relevant = {k: v for k, v in config.items() if k not in ("run_dir", "progress")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _stored_at(job: Job, fingerprint: str, runs_dir: Path) -> Path:
    return runs_dir / "results" / f"{job.corpus.name}__seed{job.seed}__{fingerprint}.json"


def result_path(job: Job, runs_dir: Path) -> Path:
    """Named by configuration, so a sweep point equal to an ablation variant reuses its run."""
    return _stored_at(job, _fingerprint(job_config(job, runs_dir)), runs_dir)


def _load(job: Job, path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return {**json.loads(path.read_text()), "key": job.key, "variant": job.variant}


def finished(job: Job, runs_dir: Path) -> dict[str, Any] | None:
    """The stored result of a run with exactly ``job``'s configuration, labelled as ``job``."""
    return _load(job, result_path(job, runs_dir))


def run_chain(jobs: Sequence[Job], runs_dir: Path) -> list[dict[str, Any]]:
    """Run jobs in order in this process (one torch thread), saving each result as it ends.

    Each job's configuration is read once: the result is stored under the configuration it
    was trained with, even if a recipe file changes while it trains.
    """
    import torch

    from cberl_model.cli import setup_logging
    from cberl_model.train.config import TrainConfig
    from cberl_model.train.pipeline import run_training

    setup_logging()
    torch.set_num_threads(1)
    results = []
    for job in jobs:
        config = job_config(job, runs_dir)
        fingerprint = _fingerprint(config)
        path = _stored_at(job, fingerprint, runs_dir)
        done = _load(job, path)
        if done is None:
            log.info("training %s", job.key)
            started = time.perf_counter()
            metrics = run_training(TrainConfig().updated(config))
            done = {"key": job.key, "corpus": job.corpus.name, "variant": job.variant,
                    "seed": job.seed, "fingerprint": fingerprint, "config": config,
                    "dev": metrics["dev"], "dev_revision0": metrics["dev_revision0"],
                    "best_epoch": metrics["best_epoch"],
                    "seconds": time.perf_counter() - started}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(done, indent=2) + "\n")
        else:
            log.info("skipping %s (finished with the same configuration)", job.key)
        results.append(done)
    return results


def run_jobs(jobs: Sequence[Job], runs_dir: Path, workers: int) -> list[dict[str, Any]]:
    """Run every job, ``workers`` chains (same corpus and seed) at a time; in-process if 1."""
    chains: dict[tuple[str, int], list[Job]] = {}
    for job in jobs:
        chains.setdefault((job.corpus.name, job.seed), []).append(job)
    if workers <= 1:
        return [r for chain in chains.values() for r in run_chain(chain, runs_dir)]
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers: one core each
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_chain, chain, runs_dir) for chain in chains.values()]
        return [r for future in futures for r in future.result()]


def summarise(results: Sequence[dict[str, Any]], minority: Sequence[str]) -> dict[str, Any]:
    """Mean and std (over seeds) in percent of the headline metrics and every class's F1."""
    reports = [r["dev"] for r in results]
    rows = {"weighted_f1": [r["weighted_f1"] for r in reports],
            "macro_f1": [r["macro_f1"] for r in reports],
            **{f"{m}_f1": [r["per_class"][m]["f1"] for r in reports] for m in minority}}
    per_class = {c: [r["per_class"][c]["f1"] for r in reports] for c in reports[0]["per_class"]}

    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": 100 * float(np.mean(values)), "std": 100 * float(np.std(values)),
                "n": len(values)}

    return {"metrics": {k: stat(v) for k, v in rows.items()},
            "per_class": {k: stat(v) for k, v in per_class.items()}}


def summary_table(results: Sequence[dict[str, Any]], corpora: Sequence[CorpusSpec],
                  names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{corpus: {variant: summary}}`` in the given variant order."""
    out: dict[str, dict[str, Any]] = {}
    for corpus in corpora:
        out[corpus.name] = {}
        for name in names:
            runs = [r for r in results if r["corpus"] == corpus.name and r["variant"] == name]
            if runs:
                out[corpus.name][name] = summarise(runs, corpus.minority)
    return out


def _cell(stat: dict[str, float]) -> str:
    """``mean ± std``; one seed has no spread to show, so its cell is the value alone."""
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}" if stat["n"] > 1 else f"{stat['mean']:.2f}"


def markdown(table: dict[str, dict[str, Any]], corpora: Sequence[CorpusSpec],
             descriptions: dict[str, str], header: str) -> str:
    """One table per corpus: variants as rows, mean +- std as cells."""
    out = [header, ""]
    for corpus in corpora:
        cols = ["weighted_f1", "macro_f1", *(f"{m}_f1" for m in corpus.minority)]
        out += [f"### {corpus.name} dev", "",
                "| variant | " + " | ".join(c.replace("_", " ") for c in cols) + " | seeds |",
                "|---" * (len(cols) + 2) + "|"]
        for name, summary in table[corpus.name].items():
            n = summary["metrics"]["weighted_f1"]["n"]
            cells = [_cell(summary["metrics"][c]) for c in cols]
            out.append(f"| {descriptions.get(name, name)} | " + " | ".join(cells) + f" | {n} |")
        out.append("")
    return "\n".join(out)


def best_variant(variants: dict[str, Any], seeds: int) -> str | None:
    """The rule that picks the default recipe: highest mean dev weighted F1.

    Only variants run on all ``seeds`` seeds compete (a partial row cannot win on luck);
    ``None`` when none is complete.
    """
    ranked = [(s["metrics"]["weighted_f1"]["mean"], name) for name, s in variants.items()
              if s["metrics"]["weighted_f1"]["n"] == seeds]
    return max(ranked)[1] if ranked else None


def claim(variants: dict[str, Any], minority: Sequence[str]) -> dict[str, dict[str, float]] | None:
    """``full`` against ``plain`` (:data:`CLAIM`) per headline metric: points and relative %.

    The paper reports +10-20% on MELD's fear and disgust without saying whether in points or
    relative to the F1 without the machinery, so both are given.
    """
    with_, without = CLAIM
    if with_ not in variants or without not in variants:
        return None
    out = {}
    for metric in ["weighted_f1", "macro_f1", *(f"{m}_f1" for m in minority)]:
        a = variants[with_]["metrics"][metric]["mean"]
        b = variants[without]["metrics"][metric]["mean"]
        out[metric] = {"with": a, "without": b, "points": a - b,
                       "relative_pct": 100 * (a - b) / b if b else float("nan")}
    return out


def conclusions(table: dict[str, dict[str, Any]], corpora: Sequence[CorpusSpec],
                descriptions: dict[str, str], seeds: int) -> str:
    """Markdown: the winner on dev per corpus and the full-vs-plain comparison."""
    out = ["## Conclusions (computed from the table above)", ""]
    for corpus in corpora:
        variants = table[corpus.name]
        winner = best_variant(variants, seeds)
        out.append(f"- **{corpus.name}**: best mean dev weighted F1 over all {seeds} seeds: " + (
            f"{descriptions.get(winner, winner)} (`{winner}`)." if winner else
            "none yet (no variant has run on every seed)."))
        gains = claim(variants, corpus.minority)
        if gains is not None:
            cells = "; ".join(f"{m.replace('_', ' ')} {g['without']:.2f} -> {g['with']:.2f} "
                              f"({g['points']:+.2f} points, {g['relative_pct']:+.1f}%)"
                              for m, g in gains.items())
            out.append(f"  - `{CLAIM[0]}` vs `{CLAIM[1]}`: {cells}.")
    return "\n".join(out) + "\n"


def plot_per_class(table: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Grouped bars: per corpus, each class's F1 (mean, std as error bar) for every variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(table), 1, figsize=(14, 4.5 * len(table)), squeeze=False)
    for ax, (corpus, variants) in zip(axes[:, 0], table.items(), strict=True):
        classes = list(next(iter(variants.values()))["per_class"])
        width = 0.8 / max(1, len(variants))
        colours = plt.get_cmap("tab20").colors  # 20 distinct colours: one per variant
        for i, (name, summary) in enumerate(variants.items()):
            means = [summary["per_class"][c]["mean"] for c in classes]
            stds = [summary["per_class"][c]["std"] for c in classes]
            ax.bar(np.arange(len(classes)) + i * width, means, width, yerr=stds, label=name,
                   capsize=1.5, color=colours[i % len(colours)])
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
        ax.set_ylabel("dev F1 (%)")
        ax.set_title(f"{corpus} dev: per-class F1")
        ax.legend(fontsize=7, ncol=4)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_sweeps(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["focal_gamma=0,1,2"]`` -> ``{"focal_gamma": [0.0, 1.0, 2.0]}`` typed like the field.

    Raises:
        ConfigError: On a malformed item or an unknown setting.
    """
    from cberl_model.runtime import ConfigError
    from cberl_model.train.config import TrainConfig

    defaults = TrainConfig().to_dict()
    sweeps: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or name not in defaults or not values:
            raise ConfigError(f"--sweep {item!r}: expected SETTING=V1,V2,... with a TrainConfig setting")
        kind = type(defaults[name])
        try:
            sweeps[name] = [kind(v) for v in values.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--sweep {item!r}: a value is not a {kind.__name__}: {exc}") from None
    return sweeps


def sweep_variants(sweeps: dict[str, list[Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """One full-model variant per swept value, named ``setting=value``."""
    return {f"{name}={value}": (f"{name} = {value}", {**FULL, name: value})
            for name, values in sweeps.items() for value in values}


def plot_sweeps(table: dict[str, dict[str, Any]], sweeps: dict[str, list[Any]],
                corpora: Sequence[CorpusSpec], path: Path, title: str) -> None:
    """Per swept setting and corpus: weighted/macro/minority F1 against the value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(corpora), len(sweeps), figsize=(5.5 * len(sweeps), 4 * len(corpora)),
                             squeeze=False)
    for row, corpus in enumerate(corpora):
        for col, (name, values) in enumerate(sweeps.items()):
            ax = axes[row, col]
            done = [v for v in values if f"{name}={v}" in table[corpus.name]]
            for metric in ["weighted_f1", "macro_f1", *(f"{m}_f1" for m in corpus.minority)]:
                stats = [table[corpus.name][f"{name}={v}"]["metrics"][metric] for v in done]
                ax.errorbar(done, [s["mean"] for s in stats], yerr=[s["std"] for s in stats],
                            marker="o", capsize=3, label=metric.replace("_", " "))
            ax.set_xlabel(name)
            ax.set_ylabel("dev F1 (%)")
            ax.set_title(f"{corpus.name}: {name}")
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meld", type=Path, help="folder with MELD's CSVs")
    parser.add_argument("--emorynlp", type=Path, help="folder with EmoryNLP's CSVs")
    parser.add_argument("--corpora", nargs="+", choices=["meld", "emorynlp"],
                        help="subset of the corpora given (default: all given)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all")
    parser.add_argument("--sweep", action="append", default=[], metavar="SETTING=V1,V2,...",
                        help="sensitivity sweep of the full model instead of the ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="CBERL epochs (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="override any TrainConfig setting in every run (JSON value)")
    parser.add_argument("--jobs", type=int, default=1, help="chains (corpus, seed) run in parallel")
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--out", type=Path, help="output stem (default docs/ablation or docs/sensitivity)")
    parser.add_argument("--title", default="", help="first line of the Markdown and figure titles")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the runs already finished and list the rest")
    args = parser.parse_args(argv)
    from cberl_model.cli import setup_logging

    setup_logging()
    corpora = [c for c in standard_corpora(args.meld, args.emorynlp)
               if args.corpora is None or c.name in args.corpora]
    if not corpora:
        parser.error("give --meld and/or --emorynlp (and --corpora among them)")
    common: dict[str, Any] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected SETTING=VALUE")
        common[name] = json.loads(value)
    if args.epochs is not None:
        common["epochs"] = args.epochs
    sweeps = parse_sweeps(args.sweep)
    variants = sweep_variants(sweeps) if sweeps else {
        name: VARIANTS[name] for name in (args.variants or VARIANTS)}
    out = args.out or Path("docs/sensitivity" if sweeps else "docs/ablation")
    jobs = [Job(corpus, name, seed, {**settings, **common})
            for seed in args.seeds for corpus in corpora for name, (_, settings) in variants.items()]
    started = time.perf_counter()
    if args.report_only:
        stored = {job.key: finished(job, args.runs) for job in jobs}  # one read per run
        results = [r for r in stored.values() if r is not None]
        missing = [key for key, r in stored.items() if r is None]
    else:
        results, missing = run_jobs(jobs, args.runs, args.jobs), []
    if not results:
        parser.error(f"no finished run under {args.runs} for these settings")
    table = summary_table(results, corpora, list(variants))
    command = shlex.join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    header = "\n".join(line for line in (
        f"## {args.title}" if args.title else "",
        f"Dev F1 (%), mean ± std over seeds {args.seeds}; corpora {[c.name for c in corpora]}; "
        f"settings on top of each variant: {json.dumps(common) if common else 'none'}. "
        f"Regenerate (trains only what is missing; `--report-only` trains nothing): "
        f"`python benchmarks/ablation.py {command}`",
        f"\n**Partial: {len(results)} of {len(jobs)} runs finished**; not yet run: "
        f"{', '.join(missing)}." if missing else "",
    ) if line)
    descriptions = {name: desc for name, (desc, _) in variants.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"title": args.title, "seeds": args.seeds, "common": common, "variants": variants,
         "summary": table, "missing": missing, "runs": results,
         "best": {c.name: best_variant(table[c.name], len(args.seeds)) for c in corpora},
         "claim": {c.name: claim(table[c.name], c.minority) for c in corpora},
         "seconds": time.perf_counter() - started}, indent=2) + "\n")
    text = markdown(table, corpora, descriptions, header)
    if not sweeps:
        text += "\n" + conclusions(table, corpora, descriptions, len(args.seeds))
    out.with_suffix(".md").write_text(text)
    figure_title = args.title or "CBERL ablation"
    if sweeps:
        plot_sweeps(table, sweeps, corpora, out.with_suffix(".png"), figure_title)
    else:
        plot_per_class(table, out.parent / f"{out.name}_per_class.png", figure_title)
    print(text)
    return 0


if __name__ == "__main__":
    from cberl_model.cli import run_cli

    run_cli(main)
