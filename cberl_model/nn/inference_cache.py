"""Derived inference weights (folded, stacked), recomputed only when a parameter changes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import Tensor, nn

T = TypeVar("T")


def cached(module: nn.Module, name: str, params: Sequence[Tensor], build: Callable[[], T]) -> T:
    """``build()``, memoised on ``module`` until one of ``params`` changes.

    A parameter changes by an in-place update (optimizer step, ``load_state_dict``,
    ``copy_``: its version counter moves) or by replacement (its storage moves), so the
    key is every parameter's storage, version, device and dtype. Training never reads
    the cache; it only pays for a rebuild on the next eval-mode fast path.
    """
    key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in params)
    store: dict[str, tuple[tuple, object]] = module.__dict__.setdefault("_inference_cache", {})
    hit = store.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]  # type: ignore[return-value]
    value = build()
    store[name] = (key, value)
    return value
