"""GPU model filter: a pod that names allowed models only goes to nodes with one of them."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, FilterResult, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "gpu-model"


def allowed_models(models: tuple[str, ...], wanted: tuple[str, ...]) -> np.ndarray:
    """bool per model id: is it one of ``wanted`` (case-insensitive)."""
    w = {m.lower() for m in wanted}
    return np.array([m.lower() in w for m in models], dtype=bool)


@register(NAME)
class GpuModel(BasePlugin):
    def filter(self, shape: PodShape, snap: Snapshot, state: Any) -> FilterResult | None:
        if shape.gpus == 0 or not shape.gpu_models:
            return None
        a = snap.arrays
        ok = allowed_models(a.models, shape.gpu_models)[a.model_id] & (a.gpu_count > 0)
        return FilterResult.single(ok, f"had no GPU of model {'|'.join(shape.gpu_models)}")
