"""The ablation's switches and ``benchmarks/ablation.py`` (variants, resuming, outputs)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from cberl_model.nn import CBERL, CBERLConfig
from cberl_model.train.config import TrainConfig
from cberl_model.train.loop import ObjectiveWeights, Stage, Trainer
from cberl_model.windows import WindowBatch, evaluation_windows
from tests.cberl_model.test_augment import clustered_corpus, write_feature_corpus

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ablation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", ["meld", "emorynlp"])
def test_every_variant_is_a_valid_config_that_changes_one_thing(ablation: ModuleType, recipe: str):
    base = TrainConfig.from_file(ROOT / "cberl_model" / "recipes" / f"{recipe}.toml")
    full = base.updated(ablation.FULL).to_dict()
    assert full["augment"] == "gan" and full["focal_gamma"] == 2.0
    expected_changes = {
        "full": set(), "no-gan": {"augment"}, "oversample": {"augment"}, "smote": {"augment"},
        "classweight": {"augment"}, "cross-entropy": {"focal_gamma"},
        "no-masked-rec": {"mask_rate", "reconstruction_weight"}, "concat-fusion": {"fusion"},
        "single-classifier": {"ensemble_members"}, "no-graph": {"use_graph"},
        "masked-rec-only": {"augment", "focal_gamma"},
        "plain": {"augment", "focal_gamma", "mask_rate", "reconstruction_weight"}}
    assert set(ablation.VARIANTS) == set(expected_changes)
    for name, (_, settings) in ablation.VARIANTS.items():
        config = base.updated(settings).to_dict()
        changed = {k for k in config if config[k] != full[k]}
        assert changed == expected_changes[name], name
    # A recipe that is any variant (as the recipes the ablation chose are) defines the same
    # variants: the ablation is not re-run because the recipe it chose changed.
    for _, chosen in ablation.VARIANTS.values():
        other = base.updated(chosen)
        for name, (_, settings) in ablation.VARIANTS.items():
            assert other.updated(settings).to_dict() == base.updated(settings).to_dict(), name


@pytest.mark.parametrize("recipe", ["meld", "emorynlp"])
def test_ablation_runs_on_the_encoder_its_results_were_measured_on(ablation: ModuleType,
                                                                   recipe: str):
    """The recipes moved on (mpnet, a logit bias); the ablation's runs must not follow them."""
    corpus = next(c for c in ablation.standard_corpora(Path("m"), Path("e")) if c.name == recipe)
    job = ablation.Job(corpus, "full", 0, ablation.VARIANTS["full"][1])
    config = ablation.job_config(job, Path("runs"))
    committed = next(r["config"] for r in json.loads((ROOT / "docs" / "ablation.json").read_text())
                     ["runs"] if r["corpus"] == recipe and r["variant"] == "full")
    for key in ("text_model", "encoder_lora_rank", "encoder_max_tokens"):
        assert config[key] == committed[key], key
    assert not config["encoder_bf16"] and config["logit_bias"] == ""
    assert config["asr_fraction"] == 0.0 and config["encoder_context_turns"] == 0


def tiny_batch(modalities: tuple[str, ...] = ("text", "audio")) -> WindowBatch:
    convs = clustered_corpus(0, modalities, conversations=4, present_rate=0.6)
    return WindowBatch.collate(evaluation_windows(convs, 3, 1)[:12], 3, 1, 4.0)


@pytest.mark.parametrize("switches", [
    {"fusion": "concat"}, {"use_graph": False}, {"ensemble_members": 1},
    {"mask_rate": 0.0, "target_mask_rate": 0.0}, {"fusion": "concat", "use_graph": False}])
def test_ablated_networks_train(switches: dict[str, object]):
    torch.manual_seed(0)
    config = CBERLConfig(input_dims={"text": 16, "audio": 8}, num_classes=4, past=3, future=1,
                         latent_dim=16, fusion_hidden=16, lstm_hidden=8, gat_heads=2, **switches)
    model = CBERL(config)
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), ObjectiveWeights(), 1e-2, 0.0,
                      torch.device("cpu"), ("a", "b", "c", "d"))
    batch = tiny_batch()
    out = trainer.compute_forward(batch, Stage.TRAIN)
    loss, parts = trainer.compute_objectives(out, batch, Stage.TRAIN)
    assert torch.isfinite(loss)
    loss.backward()
    keys = set(model.state_dict())
    assert any(k.startswith("graph.") for k in keys) == config.use_graph
    assert any(k.startswith("fusion.decoders.") for k in keys) == (config.fusion == "djvae")
    if config.fusion == "concat":
        assert parts["kl"] == 0.0 and parts["vae_rec"] == 0.0
    if config.mask_rate == 0.0:
        assert parts["masked_rec"] == 0.0
    assert model.predict_proba(batch).shape == (12, 4)


def test_default_switches_build_the_saved_network():
    torch.manual_seed(0)
    dims = {"text": 16, "audio": 8}
    default = CBERL(CBERLConfig(input_dims=dims, num_classes=4, past=3, future=1))
    assert default.config.fusion == "djvae" and default.graph is not None
    # An artifact written before the switches existed has no such keys: same network.
    old_card = {k: v for k, v in default.config.to_dict().items() if k not in ("fusion", "use_graph")}
    assert set(CBERL(CBERLConfig(**old_card)).state_dict()) == set(default.state_dict())
    with pytest.raises(ValueError, match="fusion must be one of"):
        CBERL(CBERLConfig(input_dims=dims, num_classes=4, fusion="sum"))


def test_sweep_parsing(ablation: ModuleType):
    sweeps = ablation.parse_sweeps(["focal_gamma=0,2", "mask_rate=0.3"])
    assert sweeps == {"focal_gamma": [0.0, 2.0], "mask_rate": [0.3]}
    variants = ablation.sweep_variants(sweeps)
    assert variants["focal_gamma=2.0"][1] == {**ablation.FULL, "focal_gamma": 2.0}
    for bad in ("focal_gamma", "gamma=1", "focal_gamma="):
        with pytest.raises(ValueError, match="expected SETTING"):
            ablation.parse_sweeps([bad])


def test_ablation_runs_resumes_and_reports(ablation: ModuleType, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    train = write_feature_corpus(tmp_path, "train", 20, 30)
    dev = write_feature_corpus(tmp_path, "dev", 21, 8)
    corpus = ablation.CorpusSpec("tiny", f"jsonl:{train}", f"jsonl:{dev}", ("fear", "disgust"))
    tiny = {"epochs": 1, "latent_dim": 16, "lstm_hidden": 8, "gat_heads": 2, "gan_epochs": 1,
            "cache_dir": str(tmp_path / "cache")}
    names = ["full", "concat-fusion"]
    jobs = [ablation.Job(corpus, n, s, {**ablation.VARIANTS[n][1], **tiny}) for s in (0, 1) for n in names]
    runs = tmp_path / "runs"
    results = ablation.run_jobs(jobs, runs, 1)
    assert [r["key"] for r in results] == [j.key for j in jobs]
    assert len(list((runs / "results").glob("*.json"))) == len(jobs)
    # A second invocation trains nothing; a changed setting re-runs that job.
    import cberl_model.train.pipeline as pipeline

    def refuse(config: TrainConfig) -> dict:
        raise AssertionError(f"re-trained {config.run_dir}")

    monkeypatch.setattr(pipeline, "run_training", refuse)
    assert ablation.run_jobs(jobs, runs, 1) == results
    changed = ablation.Job(corpus, "full", 0, {**jobs[0].settings, "epochs": 2})
    with pytest.raises(AssertionError, match="re-trained"):
        ablation.run_jobs([changed], runs, 1)
    # Reports: mean +- std over the two seeds, per-class bars.
    table = ablation.summary_table(results, [corpus], names)
    full = table["tiny"]["full"]["metrics"]
    seeds = [100 * r["dev"]["weighted_f1"] for r in results if r["variant"] == "full"]
    assert full["weighted_f1"]["mean"] == pytest.approx(np.mean(seeds))
    assert full["weighted_f1"]["n"] == 2
    text = ablation.markdown(table, [corpus], {"full": "full model"}, "## smoke")
    assert "| full model | " in text and "fear f1" in text and text.startswith("## smoke")
    assert f"| full model | {np.mean(seeds):.2f} ± {np.std(seeds):.2f} |" in text
    one_seed = ablation.summary_table(results[:1], [corpus], names)
    assert f"| full model | {seeds[0]:.2f} | " in ablation.markdown(one_seed, [corpus],
                                                                    {"full": "full model"}, "")
    png = tmp_path / "bars.png"
    ablation.plot_per_class(table, png, "t")
    assert png.read_bytes()[:4] == b"\x89PNG"
    stored = json.loads(ablation.result_path(jobs[0], runs).read_text())
    assert stored["config"]["augment"] == "gan" and stored["config"]["seed"] == 0


def test_sweep_table_and_plot(ablation: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import cberl_model.train.pipeline as pipeline

    labels = ("neutral", "fear", "disgust")

    def fake_training(config: TrainConfig) -> dict:
        """Scores that depend on the swept gamma and the seed, so the summary is checkable."""
        f1 = 0.1 * config.focal_gamma + 0.01 * config.seed
        report = {"weighted_f1": f1, "macro_f1": f1 / 2,
                  "per_class": {c: {"f1": f1, "support": 1} for c in labels}}
        return {"dev": report, "dev_revision0": report, "best_epoch": 1}

    calls: list[str] = []

    def counted(config: TrainConfig) -> dict:
        calls.append(config.run_dir)
        return fake_training(config)

    monkeypatch.setattr(pipeline, "run_training", counted)
    corpus = ablation.CorpusSpec("tiny", "jsonl:t", "jsonl:d", ("fear", "disgust"))
    full = [ablation.Job(corpus, "full", seed, ablation.FULL) for seed in (0, 2)]
    ablation.run_jobs(full, tmp_path / "runs", 1)
    sweeps = ablation.parse_sweeps(["focal_gamma=0,2,3"])
    variants = ablation.sweep_variants(sweeps)
    jobs = [ablation.Job(corpus, name, seed, settings) for seed in (0, 2)
            for name, (_, settings) in variants.items()]
    results = ablation.run_jobs(jobs, tmp_path / "runs", 1)
    assert len(calls) == 2 + 4  # gamma 2 is the full model: its runs are reused
    assert {r["variant"] for r in results} == set(variants)
    table = ablation.summary_table(results, [corpus], list(variants))
    assert table["tiny"]["focal_gamma=2.0"]["metrics"]["weighted_f1"]["mean"] == pytest.approx(21.0)
    gamma3 = table["tiny"]["focal_gamma=3.0"]["metrics"]["fear_f1"]
    assert gamma3["mean"] == pytest.approx(31.0) and gamma3["std"] == pytest.approx(1.0)
    png = tmp_path / "sweep.png"
    ablation.plot_sweeps(table, sweeps, [corpus], png, "t")
    assert png.read_bytes()[:4] == b"\x89PNG"


def fake_result(corpus: str, variant: str, seed: int, weighted: float, fear: float) -> dict:
    classes = {"neutral": 0.7, "fear": fear, "disgust": fear / 2}
    report = {"weighted_f1": weighted, "macro_f1": weighted / 2,
              "per_class": {c: {"f1": f1, "support": 1} for c, f1 in classes.items()}}
    return {"corpus": corpus, "variant": variant, "seed": seed, "dev": report}


def test_best_variant_and_the_claim(ablation: ModuleType):
    corpus = ablation.CorpusSpec("tiny", "jsonl:t", "jsonl:d", ("fear", "disgust"))
    results = [fake_result("tiny", "full", s, 0.50 + 0.01 * s, 0.30) for s in (0, 1)]
    results += [fake_result("tiny", "plain", s, 0.52, 0.20) for s in (0, 1)]
    # Best on one seed only: a partial row never wins.
    results += [fake_result("tiny", "recipe", 0, 0.90, 0.10)]
    table = ablation.summary_table(results, [corpus], ["full", "plain", "recipe"])["tiny"]
    assert ablation.best_variant(table, 2) == "plain"
    assert ablation.best_variant(table, 3) is None
    gains = ablation.claim(table, corpus.minority)
    assert gains["fear_f1"]["points"] == pytest.approx(10.0)
    assert gains["fear_f1"]["relative_pct"] == pytest.approx(50.0)
    assert gains["weighted_f1"]["points"] == pytest.approx(50.5 - 52.0)
    assert ablation.claim({"full": table["full"]}, corpus.minority) is None
    text = ablation.conclusions({"tiny": table}, [corpus], {"plain": "none of the three"}, 2)
    assert "none of the three (`plain`)" in text and "fear f1 20.00 -> 30.00 (+10.00 points, +50.0%)" in text


def test_report_only_trains_nothing_and_lists_what_is_missing(
        ablation: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import cberl_model.train.pipeline as pipeline

    def refuse(config: TrainConfig) -> dict:
        raise AssertionError("trained")

    meld = tmp_path / "meld"
    meld.mkdir()
    corpus = ablation.standard_corpora(meld, None)[0]
    runs = tmp_path / "runs"
    out = tmp_path / "report"
    argv = ["--meld", str(meld), "--seeds", "0", "1", "--variants", "full", "plain",
            "--runs", str(runs), "--out", str(out), "--report-only"]
    monkeypatch.setattr(pipeline, "run_training", refuse)
    with pytest.raises(SystemExit):  # nothing finished yet: a clear error, no empty report
        ablation.main(argv)
    job = ablation.Job(corpus, "full", 0, ablation.VARIANTS["full"][1])
    path = ablation.result_path(job, runs)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(fake_result("meld", "full", 0, 0.6, 0.25)))
    assert ablation.main(argv) == 0
    text = out.with_suffix(".md").read_text()
    assert "**Partial: 1 of 4 runs finished**" in text
    assert "meld__plain__seed0, meld__full__seed1, meld__plain__seed1" in text
    assert "none yet (no variant has run on every seed)" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["missing"] == ["meld__plain__seed0", "meld__full__seed1", "meld__plain__seed1"]
    assert report["best"] == {"meld": None} and report["claim"] == {"meld": None}


@pytest.mark.parametrize("corpus", ["meld", "emorynlp"])
def test_each_default_recipe_is_its_corpus_winner_in_the_committed_ablation(ablation: ModuleType,
                                                                            corpus: str):
    """Issue 3's rule: whatever wins on dev is the default recipe (re-check after a new report)."""
    report = json.loads((ROOT / "docs" / "ablation.json").read_text())
    assert not report["missing"]
    winner = report["best"][corpus]
    recipe = TrainConfig.from_file(ROOT / "cberl_model" / "recipes" / f"{corpus}.toml")
    assert recipe.updated(ablation.VARIANTS[winner][1]).to_dict() == recipe.to_dict(), winner


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module
    spec.loader.exec_module(module)
    return module


def cv_report() -> dict:
    return json.loads((ROOT / "docs" / "quality_cv.json").read_text())


@pytest.mark.parametrize("corpus", ["meld", "emorynlp"])
def test_each_default_recipe_holds_its_cv_winner(quality: ModuleType, corpus: str):
    """Issue 13's rule: the recipe is the CV winner (mean over folds), never dev alone.

    Both corpora have a finished CV in the committed report; each recipe must hold its
    winner's settings, the fitted logit bias included.
    """
    block = cv_report()["corpora"].get(corpus) or {}
    assert block.get("winner"), f"docs/quality_cv.json has no finished CV of {corpus}"
    winner = block["winner"]
    recipe = TrainConfig.from_file(ROOT / "cberl_model" / "recipes" / f"{corpus}.toml")
    assert recipe.updated(winner["settings"]).to_dict() == recipe.to_dict(), winner


@pytest.mark.parametrize("recipe", ["meld", "emorynlp"])
def test_cv_variants_are_valid_and_change_only_the_encoder_or_its_input(
        quality: ModuleType, recipe: str):
    base = TrainConfig.from_file(ROOT / "cberl_model" / "recipes" / f"{recipe}.toml")
    for name, (_, settings) in quality.CV_VARIANTS.items():
        config = base.updated(settings).to_dict()
        changed = {k for k in config if config[k] != base.to_dict()[k]}
        assert changed <= {"encoder_context_turns", "encoder_max_tokens", "asr_fraction",
                           "exclamation_fraction", "text_model", "encoder_lora_rank",
                           "encoder_bf16"}, name


def test_cv_summary_reports_every_class_and_fits_the_bias_out_of_fold(quality: ModuleType):
    rng = np.random.default_rng(0)
    labels = ["neutral", "joy", "fear"]
    runs = []
    for fold in range(3):
        y = rng.choice(3, size=200, p=[0.6, 0.3, 0.1])
        final = rng.normal(0, 1, (2, 200, 3))
        final[:, np.arange(200), y] += 1.5
        final[..., 0] += 1.0
        arrays = {"y": y, "final": final, "revision0": final, "baseline": final[0],
                  "conversation": np.array([f"{'dev' if i % 4 else 'train'}/d{i}"
                                            for i in range(200)])}
        runs.append({"summary": {"seconds": 60.0}, "arrays": arrays, "seed": 0, "fold": fold})
    summary = quality.cv_summary({"labels": labels, "variants": {"utterance": runs}})
    systems = summary["utterance"]["systems"]
    assert set(systems) == {
        "per-utterance fine-tuned (baseline)", "per-utterance fine-tuned + prior correction",
        "CBERL revision 0", "CBERL final", "CBERL revision 0 + prior correction",
        "CBERL final + prior correction"}
    cv = systems["CBERL final + prior correction"]["cv"]
    assert {"weighted_f1", "macro_f1", "neutral_f1", "joy_f1", "fear_f1"} <= set(cv)
    assert cv["fear_f1"]["n"] == 3
    assert (systems["CBERL final + prior correction"]["cv"]["macro_f1"]["mean"]
            > systems["CBERL final"]["cv"]["macro_f1"]["mean"])
    assert len(summary["utterance"]["logit_bias"]["nested_per_fold"]["final"]) == 3
    winner = quality.cv_winner(summary)
    assert winner["variant"] == "utterance" and "logit_bias" in winner["settings"]


def test_cv_ensembles_average_the_variants_out_of_fold_on_the_folds_they_share(
        quality: ModuleType, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(1)
    labels = ["neutral", "joy", "fear"]
    ys = [rng.choice(3, size=150) for _ in range(3)]

    def runs(noise: float, folds: range) -> list[dict]:
        out = []
        for fold in folds:
            final = rng.normal(0, noise, (2, 150, 3))
            final[:, np.arange(150), ys[fold]] += 1.0
            out.append({"seed": 0, "fold": fold, "arrays": {"y": ys[fold], "final": final}})
        return out

    monkeypatch.setattr(quality, "CV_ENSEMBLES", {"a + b": ("a", "b"), "a + missing": ("a", "c")})
    collected = {"labels": labels, "variants": {"a": runs(2.0, range(3)), "b": runs(2.0, range(2))}}
    ensembles = quality.cv_ensembles(collected)
    assert set(ensembles) == {"a + b"}  # an ensemble with an unfinished variant is left out
    both = ensembles["a + b"]
    assert both["folds_x_seeds"] == 2 and {"weighted_f1", "fear_f1"} <= set(both["cv"])
    alone = [quality._scores(ys[f], collected["variants"]["a"][f]["arrays"]["final"],
                             tuple(labels))["weighted_f1"] for f in range(2)]
    assert both["cv"]["weighted_f1"]["mean"] > 100 * np.mean(alone)  # independent noise averages out
    collected["variants"]["b"][0]["arrays"]["y"] = ys[0][::-1].copy()
    with pytest.raises(ValueError, match="different utterances"):
        quality.cv_ensembles(collected)


def test_cv_folds_split_across_processes_train_only_their_folds_and_share_the_rest(
        quality: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``--folds``: one process per fold; each collects what the others finished."""
    from cberl_model.data import Conversation, Corpus, Utterance

    pooled = Corpus("tiny", ("neutral", "joy"), [Conversation(f"train/d{i}", [
        Utterance(f"dia{i}_utt0", "A", "hi", "joy")]) for i in range(9)])
    trained: list[int] = []

    def fake_fold(config, corpus, assignment, fold, inner):
        trained.append(fold)
        y = np.array([0, 1])
        return ({"seconds": 1.0}, {"y": y, "final": np.zeros((1, 2, 2)),
                                   "revision0": np.zeros((1, 2, 2)),
                                   "conversation": np.array(["train/d0", "train/d1"])})

    monkeypatch.setattr(quality, "cv_corpus", lambda corpus, folder: pooled)
    monkeypatch.setattr(quality, "run_fold", fake_fold)
    first = quality.cv_run("meld", tmp_path, ["utterance"], [0], 3, tmp_path / "folds", True, {1})
    assert trained == [1] and [r["fold"] for r in first["variants"]["utterance"]] == [1]
    second = quality.cv_run("meld", tmp_path, ["utterance"], [0], 3, tmp_path / "folds", True, {0, 2})
    assert trained == [1, 0, 2]
    assert sorted(r["fold"] for r in second["variants"]["utterance"]) == [0, 1, 2]


def test_gold_views_split_the_asr_drop_and_the_table_shows_them(quality: ModuleType):
    assert quality.plain_words("Oh my God! You're KIDDING, right?") == "oh my god you're kidding right"
    assert quality.GOLD_VIEWS["gold_no_exclamation"][1]("No way! Really?") == "No way. Really?"

    def report(f1: float) -> dict:
        return {"weighted_f1": f1, "accuracy": f1}
    row = {"model_id": "cberl-x", **{f"{view}_{rev}": report(f1) for view, f1 in
                                     (("gold", 0.6), ("gold_no_exclamation", 0.5),
                                      ("gold_plain", 0.45), ("asr", 0.4))
                                     for rev in ("final", "revision0")}}
    table = quality.asr_dev_markdown({"corpora": {"meld": {"m": row}}})
    header, _, line = table.splitlines()[2:5]
    assert "gold, ! as . wF1" in header and "gold, words only wF1" in header
    assert line.startswith("| `m` (cberl-x) | 60.00 | 50.00 | 45.00 | 40.00 | 20.00 |")
    assert header.count("|") == line.count("|")
