"""``python -m cberl_model.train``: train a CBERL model and write its run directory.

Every :class:`~cberl_model.train.config.TrainConfig` field is a flag (``--encoder-lr``);
``--config FILE`` (TOML or JSON) sets defaults that flags override.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from cberl_model.cli import run_cli, setup_logging
from cberl_model.metrics import format_report
from cberl_model.train.config import TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cberl_model.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="TOML or JSON file of settings")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default {default})")
        else:
            parser.add_argument(flag, type=type(default), default=None, metavar="X",
                                help=f"(default {default!r})")
    return parser


def main() -> int:
    args = _parser().parse_args()
    setup_logging(args.verbose)
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    flags = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name) is not None}
    config = config.updated(flags)
    print(json.dumps(config.to_dict(), indent=2))
    from cberl_model.train.pipeline import run_training  # heavy imports after arg parsing

    metrics = run_training(config)
    print(f"\ndev, final labels (future={config.future})\n{format_report(metrics['dev'])}")
    print(f"\ndev, revision-0 labels: weighted F1 {100 * metrics['dev_revision0']['weighted_f1']:.2f}")
    print(f"\nrun directory: {config.run_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
