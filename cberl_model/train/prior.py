"""Post-hoc class-prior correction: per-class biases on the ensemble members' logits.

A classifier trained on MELD's prior (47 % neutral, 2.6 % fear) under-predicts the rare
classes even with mild class weights. Adding a bias vector :math:`b` to every member's
logits before the softmax,

.. math::
    \\bar p(y \\mid x) = \\frac{1}{K} \\sum_k \\mathrm{softmax}(f_k(x) + b)_y,

moves the decision boundaries toward the rare classes (logit adjustment, Menon et al. 2021,
https://arxiv.org/abs/2007.07314, with :math:`b` fitted rather than set to
:math:`-\\tau \\log \\pi`). :math:`b` is fitted on *out-of-fold* logits (never on the
utterances it is scored on) by coordinate ascent on a grid, maximising the mean of
weighted and macro F1, and is folded into the members' output biases
(:func:`fold_into_model`), so an artifact carries it without any change to serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cberl_model.runtime import ConfigError

GRID = np.round(np.arange(-1.0, 2.01, 0.1), 2)
"""Bias values tried per class (the reference class, the most frequent, stays at 0)."""


def probabilities(member_logits: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``(K, N, C)`` member logits (or ``(N, C)`` for one model) -> averaged softmax ``(N, C)``."""
    logits = member_logits if member_logits.ndim == 3 else member_logits[None]
    if bias is not None:
        logits = logits + bias
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(-1, keepdims=True)).mean(0)


def objective(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> float:
    """What the bias maximises: the mean of weighted and macro F1 (as in ``metrics``).

    Computed from one confusion count (this runs hundreds of times per fit); it equals
    :func:`~cberl_model.metrics.classification_report`'s numbers.
    """
    c = len(labels)
    counts = np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)
    tp = np.diag(counts).astype(np.float64)
    support, predicted = counts.sum(1), counts.sum(0)
    denominator = support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros(c), where=denominator > 0)
    present = support > 0
    weighted = float((f1 * support).sum() / max(1, support.sum()))
    return 0.5 * (weighted + float(f1[present].mean()))


def fit_bias(member_logits: np.ndarray, y_true: np.ndarray, labels: Sequence[str],
             sweeps: int = 3) -> np.ndarray:
    """Per-class biases ``(C,)`` that maximise :func:`objective` on these logits.

    Coordinate ascent over :data:`GRID`, the most frequent class fixed at 0 (a common shift
    changes nothing); ties keep the smaller absolute bias.

    Args:
        member_logits: ``(K, N, C)`` or ``(N, C)`` logits of labelled utterances.
        y_true: ``(N,)`` class indices.
        labels: Class names in index order.
        sweeps: Passes over the classes.
    """
    logits = member_logits if member_logits.ndim == 3 else member_logits[None]
    num_classes = logits.shape[-1]
    reference = int(np.bincount(y_true, minlength=num_classes).argmax())
    bias = np.zeros(num_classes)
    best = objective(y_true, probabilities(logits, bias).argmax(1), labels)
    for _ in range(sweeps):
        changed = False
        for c in range(num_classes):
            if c == reference:
                continue
            for value in sorted(GRID, key=abs):
                trial = bias.copy()
                trial[c] = value
                score = objective(y_true, probabilities(logits, trial).argmax(1), labels)
                if score > best + 1e-9:
                    best, bias, changed = score, trial, True
        if not changed:
            break
    return bias


def bias_spec(bias: np.ndarray, labels: Sequence[str]) -> str:
    """The recipe's ``logit_bias`` string of a bias vector (zeros left out)."""
    return ",".join(f"{label}={b:.2f}" for label, b in zip(labels, bias, strict=True) if b)


def bias_vector(spec: dict[str, float], labels: Sequence[str]) -> np.ndarray:
    """A parsed ``logit_bias`` as a ``(C,)`` vector in the model's label order.

    Raises:
        ConfigError: If it names a label the model does not have.
    """
    unknown = sorted(set(spec) - set(labels))
    if unknown:
        raise ConfigError(f"logit_bias names unknown label(s) {unknown}; labels: {list(labels)}")
    return np.array([spec.get(label, 0.0) for label in labels])


@torch.no_grad()
def fold_into_model(model: torch.nn.Module, bias: np.ndarray) -> None:
    """Add ``bias`` to the output bias of every ensemble member (``model.classifier``)."""
    shift = torch.as_tensor(bias, dtype=torch.float32)
    for member in model.classifier.members:
        member[-1].bias.add_(shift.to(member[-1].bias.device))


class MemberLogits:
    """Captures the ensemble members' logits ``(K, B, C)`` of every prediction while active.

    A forward hook on ``model.classifier`` (and a wrapper of its batched ``infer``, where the
    network has one), so prediction code stays untouched::

        with MemberLogits(model) as captured:
            probs = predict_windows(model, windows, device)
        logits = captured.logits()   # (K, N, C), rows in the order of ``windows``
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._chunks: list[np.ndarray] = []
        self._handle = None
        self._patched = False

    def _keep(self, out: torch.Tensor) -> torch.Tensor:
        self._chunks.append(out.detach().float().cpu().numpy())
        return out

    def __enter__(self) -> MemberLogits:
        classifier = self.model.classifier
        self._handle = classifier.register_forward_hook(lambda _m, _i, out: self._keep(out))
        infer = getattr(classifier, "infer", None)
        if callable(infer):
            classifier.infer = lambda *a, **k: self._keep(infer(*a, **k))
            self._patched = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
        if self._patched:
            del self.model.classifier.infer  # the instance attribute; the method shows again
            self._patched = False

    def logits(self) -> np.ndarray:
        return np.concatenate(self._chunks, axis=1)


def apply_to_artifact(model_dir: Path, spec: str, out_dir: Path, dev: str | None = None) -> str:
    """Fold a ``logit_bias`` into a trained model directory (no retraining); its new id.

    The result equals training with that ``logit_bias`` in the recipe (the bias is applied
    after training either way). The card records the bias in ``training.config``, and its
    dev metrics are re-scored with the bias on ``dev`` (default: the card's own dev split),
    so the card describes the model it ships with; the unbiased ones are kept beside them.

    Raises:
        ConfigError: If the model already carries a bias, or has no dev split to re-score.
    """
    from cberl_model.artifact import load_artifact, save_artifact  # artifact sits above nn
    from cberl_model.evaluate import evaluate_artifact
    from cberl_model.train.config import parse_logit_bias

    bias = parse_logit_bias(spec)
    artifact = load_artifact(model_dir)
    training = dict(artifact.card.get("training", {}))
    previous = training.get("config", {}).get("logit_bias", "")
    if previous:
        raise ConfigError(f"{model_dir} already carries logit_bias {previous!r}")
    dev = dev or training.get("dev")
    if not dev:
        raise ConfigError(f"{model_dir} records no dev split; give one to re-score it on")
    fold_into_model(artifact.model, bias_vector(bias, artifact.labels))
    training["config"] = {**training.get("config", {}), "logit_bias": spec}
    metrics = {"dev": evaluate_artifact(artifact, dev),
               "dev_revision0": evaluate_artifact(artifact, dev, future=0),
               "before_logit_bias": artifact.card.get("metrics", {})}
    save_artifact(out_dir, artifact.model, artifact.encoder, artifact.labels,
                  artifact.feature_spec, training=training, metrics=metrics)
    return load_artifact(out_dir).model_id


def main() -> int:
    """``python -m cberl_model.train.prior MODEL_DIR "fear=0.8,disgust=1.1" [OUT_DIR] [--dev F:P]``."""
    import argparse

    parser = argparse.ArgumentParser(description=apply_to_artifact.__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("logit_bias")
    parser.add_argument("out_dir", type=Path, nargs="?")
    parser.add_argument("--dev", metavar="FORMAT:PATH",
                        help="split to re-score the card's dev metrics on (default: the card's)")
    args = parser.parse_args()
    print(apply_to_artifact(args.model_dir, args.logit_bias, args.out_dir or args.model_dir,
                            args.dev))
    return 0


if __name__ == "__main__":
    from cberl_model.cli import run_cli

    run_cli(main)
