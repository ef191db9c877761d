"""``python -m cberl_model.corpus build SOURCE OUT``: raw media + labels -> feature corpus.

Examples::

    python -m cberl_model.corpus build meld:MELD.Raw/train/train_sent_emo.csv built/train
    python -m cberl_model.corpus build jsonl:calls.jsonl built/calls --visual none
    python -m cberl_model.train --train cached:built/train --dev cached:built/dev

Run the same command again to resume an interrupted build.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cberl_model.cli import run_cli, setup_logging
from cberl_model.features.media import FRAME_RATE
from cberl_model.features.registry import FEATURIZERS
from cberl_model.features.whisper_model import DEFAULT_WHISPER_MODEL


def _names(modality: str) -> list[str]:
    return [name for name, r in FEATURIZERS.items() if r.modality == modality] + ["none"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cberl_model.corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="featurize a corpus's media into a cached corpus")
    build.add_argument("source", help="meld:PATH/TO/{split}_sent_emo.csv or jsonl:PATH")
    build.add_argument("out", type=Path, help="output directory (reused to resume)")
    build.add_argument("--audio", choices=_names("audio"), default="opensmile-egemaps-v02",
                       help="audio featurizer (default %(default)s)")
    build.add_argument("--visual", choices=_names("visual"), default="mediapipe-face-mesh",
                       help="visual featurizer (default %(default)s)")
    build.add_argument("--whisper-model", default=DEFAULT_WHISPER_MODEL,
                       help="model of the whisper-encoder featurizer (default %(default)s)")
    build.add_argument("--media-dir", type=Path, help="MELD clip folder if not beside the CSV")
    build.add_argument("--workers", type=int, default=2, help="processes (default %(default)s)")
    build.add_argument("--frame-rate", type=float, default=FRAME_RATE,
                       help="video frames sampled per second (default %(default)s)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def main() -> int:
    args = _parser().parse_args()
    setup_logging(args.verbose)
    from cberl_model.corpus.build import BuildConfig, build_corpus

    chosen = {m: name for m, name in (("audio", args.audio), ("visual", args.visual))
              if name != "none"}
    options = {"whisper-encoder": {"model": args.whisper_model}} \
        if chosen.get("audio") == "whisper-encoder" else {}
    report = build_corpus(BuildConfig(source=args.source, out=args.out, featurizers=chosen,
                                      options=options, media_dir=args.media_dir,
                                      workers=args.workers, frame_rate=args.frame_rate,
                                      progress=not args.no_progress))
    print(f"{report.total} utterances: {report.computed} featurized, {report.reused} reused, "
          f"{len(report.failed)} with unreadable media (text kept)")
    for utterance_id, error in report.failed[:20]:
        print(f"  {utterance_id}: {error}")
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20} more in {args.out / 'errors.jsonl'}")
    print(f"train with: --train cached:{args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
