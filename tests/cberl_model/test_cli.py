"""cberl_model's command-line plumbing: which errors are the user's, and the config checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cberl_model.cli import USER_ERRORS, run_cli
from cberl_model.runtime import ConfigError, select_device, select_precision
from cberl_model.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _run_main(body: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        from cberl_model.cli import run_cli
        from cberl_model.runtime import ConfigError

        def main():
            {body}

        run_cli(main)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                          capture_output=True, timeout=300)


def test_a_bare_value_error_is_a_bug_and_keeps_its_traceback() -> None:
    result = _run_main("raise ValueError('an internal invariant broke')")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ValueError: an internal invariant broke" in result.stderr


def test_a_declared_user_error_is_one_line_and_exit_2() -> None:
    result = _run_main("raise ConfigError('--future must be between 0 and 2,\\n got 5')")
    assert result.returncode == 2
    assert result.stderr == "error: --future must be between 0 and 2, got 5\n"


def test_bare_value_error_is_not_declared() -> None:
    assert ValueError not in USER_ERRORS
    assert ConfigError in USER_ERRORS and FileNotFoundError in USER_ERRORS


def test_run_cli_exits_with_mains_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: 0)
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: (_ for _ in ()).throw(FileNotFoundError("model.safetensors")))
    assert done.value.code == 2 and capsys.readouterr().err == "error: model.safetensors\n"


@pytest.mark.parametrize("values, message", [
    ({"augment": "mixup"}, "unknown augmentation 'mixup'"),
    ({"fusion": "sum"}, "fusion must be one of djvae, concat"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"mask_rate": 1.0}, r"mask_rate must be in \[0, 1\)"),
    ({"augment_ratio": 0.0}, r"augment_ratio must be in \(0, 1\]"),
    ({"asr_fraction": 1.5}, r"asr_fraction must be in \[0, 1\]"),
    ({"exclamation_fraction": -0.1}, r"exclamation_fraction must be in \[0, 1\]"),
    ({"latent_dim": 10, "gat_heads": 3}, "divisible by gat_heads"),
    ({"epochs": "many"}, "epochs must be a int"),
])
def test_train_config_refuses_invalid_settings(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig().updated(values)


def test_train_config_accepts_its_defaults_and_recipes() -> None:
    assert TrainConfig().problems() == []
    for recipe in sorted((ROOT / "cberl_model" / "recipes").glob("*.toml")):
        assert TrainConfig.from_file(recipe).problems() == []
    assert TrainConfig().updated({"lr": 1, "use_graph": False, "gat_heads": 3}).lr == 1


def test_unknown_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_encoder_precision_is_chosen_per_device():
    cpu = torch.device("cpu")
    assert select_precision("float32", cpu) == torch.float32
    assert select_precision("bfloat16", cpu) == torch.bfloat16
    assert select_precision("auto", cpu) == torch.float32
    with pytest.raises(ConfigError, match="unknown encoder precision 'fp8'"):
        select_precision("fp8", cpu)


def test_the_settings_offer_exactly_the_runtime_precisions():
    """contracts cannot import cberl_model, so the setting spells the names out again."""
    from typing import get_args

    from cberl_model.runtime import PRECISIONS
    from contracts.settings import SharedSettings

    assert get_args(SharedSettings.model_fields["encoder_precision"].annotation) == tuple(PRECISIONS)
