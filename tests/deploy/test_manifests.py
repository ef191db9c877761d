"""deploy/ cannot run here (no Kafka cluster, GPUs or Kubernetes), so lint what can be linted:
the Dockerfile (hadolint), the compose file (the Compose specification's JSON schema), the
Kubernetes manifests (the API schemas of their kinds) and every YAML file (yamllint)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BIN = Path(sys.executable).parent
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
YAMLLINT_RULES = ("{extends: default, rules: {line-length: {max: 110}, document-start: disable, "
                  "braces: {max-spaces-inside: 1}}}")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_dockerfile_passes_hadolint() -> None:
    result = _run(BIN / "hadolint", "--config", DEPLOY / "docker" / "hadolint.yaml",
                  DEPLOY / "docker" / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_compose_spec() -> None:
    result = _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                  DEPLOY / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("manifest", [p for p in K8S if p.name != "kustomization.yaml"],
                         ids=lambda p: p.name)
def test_kubernetes_manifest_is_valid(manifest: Path) -> None:
    result = _run(BIN / "kubernetes-validate", "--strict", manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout or "Couldn't find schema" in result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    listed = (DEPLOY / "k8s" / "kustomization.yaml").read_text()
    missing = [p.name for p in K8S if p.name != "kustomization.yaml" and p.name not in listed]
    assert not missing, f"not in kustomization.yaml: {missing}"


def test_yaml_files_pass_yamllint() -> None:
    files = [DEPLOY / "compose.yaml", *K8S]
    result = _run(BIN / "yamllint", "-d", YAMLLINT_RULES, *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_linters_reject_a_broken_manifest(tmp_path: Path) -> None:
    """The checks above can fail: a Deployment with a misspelt field is refused."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((DEPLOY / "k8s" / "worker.yaml").read_text().replace("replicas:", "replica:", 1))
    result = _run(BIN / "kubernetes-validate", "--strict", bad)
    assert result.returncode != 0
