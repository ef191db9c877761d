"""The package's import layers: serving never imports the trainer, and no folder imports up.

The imports are read from the source (AST), so the test is fast and catches a lazy import
inside a function too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cberl_model"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.startswith("cberl_model")}


def _files(*parts: str) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        target = PACKAGE / part
        out.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return out


def _offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{f.relative_to(PACKAGE.parent)} imports {name}"
            for f in files for name in sorted(_imports(f))
            if any(name == p or name.startswith(p + ".") for p in forbidden)]


SERVING = ("inference.py", "evaluate.py", "artifact.py", "predict.py", "windows.py",
           "window_graph.py", "features", "nn")


@pytest.mark.parametrize("files, forbidden", [
    (SERVING, ("cberl_model.train",)),
    (("features",), ("cberl_model.artifact", "cberl_model.inference", "cberl_model.evaluate",
                     "cberl_model.predict")),
    (("windows.py", "window_graph.py"), ("cberl_model.nn", "cberl_model.predict")),
    (("nn",), ("cberl_model.predict", "cberl_model.artifact", "cberl_model.inference")),
], ids=["serving-not-train", "features-not-artifact", "windows-below-nn", "nn-below-serving"])
def test_no_import_runs_back_up(files: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    assert _offenders(_files(*files), forbidden) == []


def test_loading_the_recognizer_does_not_load_the_trainer() -> None:
    code = ("import sys, cberl_model.inference, cberl_model.evaluate, "
            "cberl_model.features.featurizers; "
            "print(sorted(m for m in sys.modules if m.startswith('cberl_model.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "[]"


def test_the_streamer_loads_its_model_features_without_the_graph_code() -> None:
    """torch-geometric's import costs seconds of every streamer (re)start: it must not happen."""
    code = ("import sys, streamer.__main__, streamer.analyzer; "
            "from cberl_model.artifact import load_features; "
            "features = load_features(); "
            "print(features.encoder is not None, "
            "sorted(m for m in sys.modules if m.split('.')[0] == 'torch_geometric' "
            "or m.startswith('cberl_model.nn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "True []"
