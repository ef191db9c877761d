"""A full training run: corpora -> adapted encoder -> features -> augmentation -> CBERL."""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cberl_model.artifact import save_artifact
from cberl_model.augment.asr_text import heard_by_streamer, without_exclamations
from cberl_model.data import Corpus, load_corpus
from cberl_model.encoder_finetune import (
    FinetuneConfig,
    adapted_encoder,
    class_weights,
    fold_corpora,
)
from cberl_model.features.corpus_features import FeatureSpec, corpus_spec, featurize_corpus
from cberl_model.features.text_encoder import LoraSpec, TextEncoder, lora_targets
from cberl_model.metrics import confusion, format_report
from cberl_model.nn import CBERL, CBERLConfig, FocalLoss
from cberl_model.predict import evaluate_conversations
from cberl_model.runtime import (
    ConfigError,
    configure_threads,
    default_cache_dir,
    seed_everything,
    select_device,
)
from cberl_model.train.augment import AugmentSettings, get_augmentation
from cberl_model.train.config import TrainConfig, parse_logit_bias
from cberl_model.train.loop import ObjectiveWeights, Trainer
from cberl_model.train.prior import bias_vector, fold_into_model
from cberl_model.train.report import plot_confusion, plot_training_curve
from cberl_model.windows import ConversationFeatures, evaluation_windows, training_windows

log = logging.getLogger(__name__)


def _stack(conversations: list[ConversationFeatures]) -> tuple[dict, dict]:
    modalities = conversations[0].features.keys()
    feats = {m: torch.from_numpy(np.concatenate([c.features[m] for c in conversations]))
             for m in modalities}
    present = {m: torch.from_numpy(np.concatenate([c.present[m] for c in conversations]))
               for m in modalities}
    return feats, present


def out_of_fold_features(config: TrainConfig, finetune: FinetuneConfig, train: Corpus,
                         dev: Corpus, spec: FeatureSpec, cache_dir: Path,
                         device: torch.device) -> list[ConversationFeatures]:
    """Training features from encoders that never saw the conversation (cross-fitting).

    An encoder adapted on the training labels embeds those same utterances better than it
    will embed new ones, and a context model trained on such features learns to trust the
    text too much and its context too little. Each fold's utterances are therefore embedded
    by an encoder adapted on the other folds (stacking); dev and serving use the encoder
    adapted on all of train.
    """
    by_id: dict[str, ConversationFeatures] = {}
    for fit, held in fold_corpora(train, config.crossfit_folds, config.encoder_seed):
        fold_encoder, _ = adapted_encoder(config.text_model, fit, dev, finetune,
                                          config.encoder_seed, cache_dir, device, config.progress)
        for conv in featurize_corpus(held, spec, fold_encoder.to(device), cache_dir,
                                     config.progress):
            by_id[conv.conversation_id] = conv
    return [by_id[c.conversation_id] for c in train.conversations]


@dataclass
class FittedModel:
    """What :func:`fit_model` trains: the network, its encoder, and what the stages report."""

    model: CBERL
    encoder: TextEncoder | None
    spec: FeatureSpec
    labels: tuple[str, ...]
    encoder_stage: dict[str, Any] | None
    best_epoch: int
    history: list[dict[str, Any]]
    dev_feats: list[ConversationFeatures]
    device: torch.device


def finetune_config(config: TrainConfig) -> FinetuneConfig:
    """Stage 1's settings from the run's."""
    return FinetuneConfig(epochs=config.encoder_epochs, lr=config.encoder_lr,
                          batch_size=config.encoder_batch_size,
                          max_tokens=config.encoder_max_tokens,
                          class_weight_power=config.class_weight_power,
                          lora=LoraSpec(rank=config.encoder_lora_rank,
                                        alpha=2 * config.encoder_lora_rank,
                                        target_modules=lora_targets(config.text_model)),
                          context_turns=config.encoder_context_turns,
                          bf16=config.encoder_bf16)


def fit_model(config: TrainConfig, train: Corpus, dev: Corpus) -> FittedModel:
    """Stages 1-3 on in-memory corpora; ``dev`` picks the encoder epoch and stops training.

    The recipe's ``logit_bias`` is folded into the trained network last. Writes nothing
    but the caches (:func:`run_training` writes the run directory; the cross-validation
    harness, :mod:`cberl_model.train.crossval`, calls this on its folds).
    """
    configure_threads()
    device = select_device(config.device)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    if config.asr_fraction > 0:  # before stage 1: the encoder adapts to what ASR hears too
        train = heard_by_streamer(train, cache_dir, config.asr_fraction)
    if config.exclamation_fraction > 0:
        train = without_exclamations(train, config.exclamation_fraction)

    # Stage 1: the text encoder, adapted to emotion when asked (and when there is text).
    encoder_stage: dict[str, Any] | None = None
    encoder: TextEncoder | None = None
    finetune: FinetuneConfig | None = None
    needs_text = "text" not in train.feature_dims() and any(u.text for u in train.utterances())
    if needs_text and config.adapt_encoder:
        finetune = finetune_config(config)
        encoder, encoder_stage = adapted_encoder(config.text_model, train, dev, finetune,
                                                 config.encoder_seed, cache_dir, device,
                                                 config.progress)
    elif needs_text:
        encoder = TextEncoder(config.text_model, max_tokens=config.encoder_max_tokens,
                              context_turns=config.encoder_context_turns)
    if encoder is not None:
        encoder.to(device)

    # Stage 2: features (cached) and augmentation.
    spec = corpus_spec(train, encoder)
    if finetune is not None and config.crossfit_folds > 1:
        train_feats = out_of_fold_features(config, finetune, train, dev, spec, cache_dir, device)
    else:
        train_feats = featurize_corpus(train, spec, encoder, cache_dir, config.progress)
    dev_feats = featurize_corpus(dev, spec, encoder, cache_dir, config.progress, train.labels)
    # Seed here, not earlier: a cached encoder must not change what the later stages draw.
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    imbalance = get_augmentation(config.augment)
    real_train_feats = train_feats
    train_feats = imbalance.augment(train_feats, AugmentSettings(
        len(train.labels), config.augment_ratio, config.gan_epochs), rng)

    # Stage 3: the CBERL network.
    model = CBERL(CBERLConfig(
        input_dims={m: s.dim for m, s in spec.items()}, num_classes=len(train.labels),
        past=config.past, future=config.future, latent_dim=config.latent_dim,
        lstm_hidden=config.lstm_hidden, gat_heads=config.gat_heads, gat_layers=config.gat_layers,
        dropout=config.dropout, ensemble_members=config.ensemble_members,
        mask_rate=config.mask_rate, target_mask_rate=config.target_mask_rate,
        ensemble_seed=config.seed, fusion=config.fusion, use_graph=config.use_graph))
    model.fit_standardization(*_stack(real_train_feats))  # synthetic rows do not move it
    counts = np.bincount(np.concatenate([c.labels[c.labels >= 0] for c in train_feats]),
                         minlength=len(train.labels))
    power = (config.class_weight_power if imbalance.class_weight_power is None
             else imbalance.class_weight_power)
    loss = FocalLoss(config.focal_gamma, class_weights(counts, power))
    trainer = Trainer(model, loss, ObjectiveWeights(config.reconstruction_weight,
                                                    config.vae_weight, config.kl_weight),
                      config.lr, config.weight_decay, device, train.labels,
                      config.modality_dropout)
    dev_windows = [w for w in evaluation_windows(dev_feats, config.past, config.future)
                   if w.conversation.labels[w.target] >= 0]
    trainer.fit(lambda epoch: training_windows(train_feats, config.past, config.future,
                                               config.full_future_rate, rng),
                dev_windows, config.epochs, config.patience, config.batch_size, rng,
                config.progress)
    bias = parse_logit_bias(config.logit_bias)
    if bias:
        fold_into_model(model, bias_vector(bias, train.labels))
    return FittedModel(model, encoder, spec, train.labels, encoder_stage, trainer.best_epoch,
                       trainer.history, dev_feats, device)


def run_training(config: TrainConfig) -> dict[str, Any]:
    """Run every stage and write the run directory and the model artifact.

    Returns:
        The ``metrics.json`` content.
    """
    started = time.perf_counter()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if not config.train or not config.dev:
        raise ConfigError("both --train and --dev corpora are required (FORMAT:PATH)")
    train, dev = load_corpus(config.train), load_corpus(config.dev)
    log.info("train: %d conversations, %d utterances; dev: %d / %d", len(train.conversations),
             train.num_utterances, len(dev.conversations), dev.num_utterances)
    fitted = fit_model(config, train, dev)
    model, encoder, spec, device = fitted.model, fitted.encoder, fitted.spec, fitted.device
    dev_feats, encoder_stage = fitted.dev_feats, fitted.encoder_stage

    # Reports: final labels (full look-ahead) and revision-0 labels (no look-ahead).
    final, y_true, y_pred = evaluate_conversations(model, dev_feats, train.labels,
                                                   config.future, device)
    provisional, _, _ = evaluate_conversations(model, dev_feats, train.labels, 0, device)
    metrics = {
        "dev": final,
        "dev_revision0": provisional,
        "encoder_stage_dev": encoder_stage["dev"] if encoder_stage else None,
        "best_epoch": fitted.best_epoch,
        "history": fitted.history,
        "train_seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(device),
    }
    model_dir = Path(config.model_dir) if config.model_dir else run_dir / "model"
    save_artifact(model_dir, model.cpu(), encoder.cpu() if encoder else None, train.labels, spec,
                  training={"config": config.to_dict(), "train_data_hash": train.content_hash(),
                            "dev_data_hash": dev.content_hash(), "train": config.train,
                            "dev": config.dev},
                  metrics={"dev": final, "dev_revision0": provisional})
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run_dir / "per_class_report.txt").write_text(
        f"dev, final labels (future={config.future})\n{format_report(final)}\n\n"
        f"dev, revision-0 labels (future=0)\n{format_report(provisional)}\n")
    plot_confusion(confusion(y_true, y_pred, len(train.labels)), train.labels,
                   run_dir / "confusion_matrix.png", "dev, final labels")
    plot_training_curve(fitted.history, run_dir / "training_curve.png")
    return metrics
