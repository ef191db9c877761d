"""The training loop: SpeechBrain-style hooks around the CBERL network."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum, auto
from typing import Any

import numpy as np
import torch

from cberl_model.metrics import classification_report
from cberl_model.nn import CBERL, FocalLoss
from cberl_model.nn.cberl import CBERLOutput
from cberl_model.predict import predict_windows
from cberl_model.progress import progress as progress_of
from cberl_model.windows import Window, WindowBatch

log = logging.getLogger(__name__)


class Stage(Enum):
    TRAIN = auto()
    VALID = auto()
    TEST = auto()


@dataclass(frozen=True)
class ObjectiveWeights:
    """Weights of CBERL's parallel tasks in the total loss."""

    reconstruction: float = 0.3
    vae: float = 0.1
    kl: float = 0.01


def dropped_modalities(present: dict[str, torch.Tensor], rate: float) -> dict[str, torch.Tensor]:
    """Presence masks with each present modality of each node hidden with probability ``rate``.

    Modality dropout: a live call often lacks video (camera off, face out of frame) or has
    unusable audio, so the fusion must not lean on any one modality. A node never loses
    all of its modalities (its drops are undone), and with fewer than two modalities the
    masks are returned unchanged without drawing random numbers (text-only training is
    exactly as before).
    """
    if rate <= 0.0 or len(present) < 2:
        return present
    dropped = {m: mask & (torch.rand(mask.shape, device=mask.device) < rate)
               for m, mask in present.items()}
    kept = {m: present[m] & ~dropped[m] for m in present}
    emptied = ~torch.stack(list(kept.values())).any(0)
    return {m: torch.where(emptied, present[m], kept[m]) for m in present}


class Trainer:
    """Fits a :class:`CBERL` with early stopping on dev weighted F1.

    Hooks, in the order they run for each batch and stage: :meth:`compute_forward`,
    :meth:`compute_objectives`, and once per stage :meth:`on_stage_end`.

    Args:
        model: The network (moved to ``device``).
        loss: The classification loss applied to every ensemble member.
        weights: Weights of the auxiliary objectives.
        lr / weight_decay: AdamW settings.
        device: Where to train.
        labels: Label names (for reports).
        modality_dropout: Rate of :func:`dropped_modalities` on training batches; the
            objectives still reconstruct the hidden modalities (cross-modal imputation).
    """

    def __init__(self, model: CBERL, loss: FocalLoss, weights: ObjectiveWeights, lr: float,
                 weight_decay: float, device: torch.device, labels: tuple[str, ...],
                 modality_dropout: float = 0.0) -> None:
        self.model = model.to(device)
        self.modality_dropout = modality_dropout
        self.loss = loss.to(device)
        self.weights = weights
        self.device = device
        self.labels = labels
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0

    def compute_forward(self, batch: WindowBatch, stage: Stage) -> CBERLOutput:
        """Run the network; training batches go in with some modalities hidden."""
        self.model.train(stage == Stage.TRAIN)
        if stage == Stage.TRAIN:
            batch = replace(batch, present=dropped_modalities(batch.present, self.modality_dropout))
        return self.model(batch)

    def compute_objectives(self, out: CBERLOutput, batch: WindowBatch,
                           stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        """Focal loss on every member + masked reconstruction + DJVAE reconstruction/KL."""
        labelled = batch.labels >= 0
        logits = out.logits[:, labelled]
        target = batch.labels[labelled]
        classification = torch.stack([self.loss(member, target) for member in logits]).mean()
        reconstruction = self.model.reconstruction.loss(out.context, out.mask, out.inputs,
                                                        batch.present)
        vae = self.model.fusion.reconstruction_loss(out.fusion.z, out.inputs, batch.present)
        kl = out.fusion.kl()
        w = self.weights
        total = classification + w.reconstruction * reconstruction + w.vae * (vae + w.kl * kl)
        parts = {"loss": total.item(), "focal": classification.item(),
                 "masked_rec": reconstruction.item(), "vae_rec": vae.item(), "kl": kl.item()}
        return total, parts

    def on_stage_end(self, stage: Stage, epoch: int, stats: dict[str, Any]) -> bool:
        """Record the stage; on VALID keep the best weights. Returns True when improved."""
        self.history.append({"epoch": epoch, "stage": stage.name.lower(), **stats})
        if stage != Stage.VALID:
            return False
        if stats["weighted_f1"] > self.best_score:
            self.best_score, self.best_epoch = stats["weighted_f1"], epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
            return True
        return False

    def fit(self, make_train_windows: Callable[[int], list[Window]], dev_windows: list[Window],
            epochs: int, patience: int, batch_size: int, rng: np.random.Generator,
            progress: bool = True) -> None:
        """Train until dev weighted F1 has not improved for ``patience`` epochs.

        ``make_train_windows(epoch)`` draws the epoch's windows (fresh future truncation).
        The best weights are loaded back at the end.

        Raises:
            FloatingPointError: If a loss becomes NaN or infinite.
        """
        config = self.model.config
        dev_labels = np.array([int(w.conversation.labels[w.target]) for w in dev_windows])
        stale = 0
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            windows = make_train_windows(epoch)
            order = rng.permutation(len(windows))
            sums: dict[str, float] = {}
            bar = progress_of(range(0, len(order), batch_size), f"cberl epoch {epoch}",
                              unit="batch", enabled=progress, leave=False, summary=False,
                              logger=log)  # the epoch's line is logged below
            for start in bar:
                batch = WindowBatch.collate([windows[i] for i in order[start:start + batch_size]],
                                            config.past, config.future,
                                            config.edge_decay).to(self.device)
                out = self.compute_forward(batch, Stage.TRAIN)
                loss, parts = self.compute_objectives(out, batch, Stage.TRAIN)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at epoch {epoch}: {parts}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
                self.optimizer.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
            steps = max(1, math.ceil(len(order) / batch_size))
            self.on_stage_end(Stage.TRAIN, epoch, {k: v / steps for k, v in sums.items()})
            probs = predict_windows(self.model, dev_windows, self.device)
            report = classification_report(dev_labels, probs.argmax(1), self.labels)
            improved = self.on_stage_end(Stage.VALID, epoch, {
                "weighted_f1": report["weighted_f1"], "macro_f1": report["macro_f1"],
                "accuracy": report["accuracy"], "seconds": time.perf_counter() - started})
            log.info("epoch %d: train loss %.4f, dev weighted F1 %.4f%s", epoch,
                     sums.get("loss", 0.0) / steps, report["weighted_f1"], " *" if improved else "")
            stale = 0 if improved else stale + 1
            if stale >= patience:
                log.info("early stop: no dev improvement for %d epochs", patience)
                break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
