"""``python -m cberl_model.evaluate``: score a model on any labelled split.

    python -m cberl_model.evaluate --data meld:path/to/test_sent_emo.csv [--model DIR] [--json FILE]

Prints accuracy, weighted F1, macro F1 and per-class precision/recall/F1; ``--json`` writes
``{"accuracy", "weighted_f1", "macro_f1", "per_class": {...}}`` (fractions in 0..1).
Without ``--model`` the default MELD model shipped with the package is used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cberl_model.artifact import ModelArtifact, load_artifact
from cberl_model.cli import run_cli, setup_logging
from cberl_model.data import load_corpus
from cberl_model.features.corpus_features import featurize_corpus
from cberl_model.metrics import format_report
from cberl_model.predict import evaluate_conversations
from cberl_model.runtime import (
    PRECISIONS,
    ConfigError,
    configure_threads,
    select_device,
    select_precision,
)


def evaluate_artifact(artifact: ModelArtifact, corpus_spec: str, future: int | None = None,
                      cache_dir: Path | None = None) -> dict[str, Any]:
    """Score ``artifact`` on a ``FORMAT:PATH`` corpus; ``future`` defaults to the model's.

    Raises:
        ConfigError: If ``future`` is outside ``0 .. `` the model's future window.
        CorpusError: If the corpus cannot be read or has no labelled utterance.
    """
    corpus = load_corpus(corpus_spec)
    conversations = featurize_corpus(corpus, artifact.feature_spec, artifact.encoder, cache_dir,
                                     labels=artifact.labels)
    device = next(artifact.model.parameters()).device
    look_ahead = artifact.model.config.future if future is None else future
    if not 0 <= look_ahead <= artifact.model.config.future:
        raise ConfigError(f"--future must be between 0 and the model's future window "
                         f"({artifact.model.config.future}), got {look_ahead}")
    report, _, _ = evaluate_conversations(artifact.model, conversations, artifact.labels,
                                          look_ahead, device)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cberl_model.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="corpus as FORMAT:PATH (meld, emorynlp, "
                                                      "jsonl, merc)")
    parser.add_argument("--model", type=Path, default=None, help="model directory "
                                                                 "(default: the bundled MELD model)")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    parser.add_argument("--future", type=int, default=None,
                        help="look-ahead in utterances (default: the model's; 0 = revision-0 labels)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--encoder-precision", choices=tuple(PRECISIONS), default="float32",
                        help="the text encoder's dtype (default float32, the reference; auto is "
                             "what the streamer and workers serve in)")
    args = parser.parse_args()
    setup_logging()
    configure_threads()
    device = select_device(args.device)
    artifact = load_artifact(args.model, device,
                             precision=select_precision(args.encoder_precision, device))
    report = evaluate_artifact(artifact, args.data, args.future)
    print(f"model {artifact.model_id} on {args.data} ({report['num_utterances']} utterances)")
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
