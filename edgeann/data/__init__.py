"""Data: load a flow's source, check it, split it and fit the input scaler.

Sources register a loader with :func:`register_source`; each returns a :class:`Dataset` and
reports clearly what is missing or malformed. :func:`prepare` is the pipeline stage: it loads,
validates (no NaN/Inf, labels in range), shuffles, splits and standardizes (fit on the training
split only). The scaler is saved beside every run so the firmware sees what training saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeann.errors import EdgeannError
from edgeann.registry import Registry


@dataclass
class Dataset:
    x: np.ndarray  # float32 (N, *sample_shape)
    y: np.ndarray  # int64 (N,)
    classes: list[str]
    feature_names: list[str] | None = None
    origin: str = ""

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.x[idx], self.y[idx], self.classes, self.feature_names, self.origin)


@dataclass
class Scaler:
    """Per-feature standardization (statistics over every axis but the last)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, enabled: bool = True) -> Scaler:
        n_feat = x.shape[-1]
        if not enabled:
            return cls(np.zeros(n_feat, np.float32), np.ones(n_feat, np.float32))
        flat = x.reshape(-1, n_feat).astype(np.float64)
        std = flat.std(axis=0)
        return cls(flat.mean(axis=0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist(),
                                    "formula": "x_scaled = (x - mean) / std, float32, per feature (last axis)"}, indent=1))

    @classmethod
    def load(cls, path: Path) -> Scaler:
        d = json.loads(Path(path).read_text())
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    scaler: Scaler
    test_raw_x: np.ndarray | None = None  # the test features before standardization

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def classes(self) -> list[str]:
        return self.train.classes


Loader = Callable[..., Dataset]
_SOURCES = Registry("data source")
register_source = _SOURCES.register


def load_dataset(cfg, seed: int) -> Dataset:
    from edgeann.data import sources  # noqa: F401  (registers the built-in sources)

    return _SOURCES[cfg.source](cfg, seed)


def validate(ds: Dataset) -> Dataset:
    """Reject data no training should see, naming the problem."""
    where = ds.origin or "the data"
    if ds.x.ndim < 2 or len(ds.x) != len(ds.y):
        raise EdgeannError(f"{where}: features have shape {ds.x.shape} but labels {ds.y.shape}; expected (N, ...) and (N,)")
    if len(ds) == 0:
        raise EdgeannError(f"{where}: no samples")
    if not np.issubdtype(ds.x.dtype, np.number):
        raise EdgeannError(f"{where}: features are {ds.x.dtype}, not numbers")
    bad = ~np.isfinite(ds.x.reshape(len(ds.x), -1)).all(axis=1)
    if bad.any():
        raise EdgeannError(f"{where}: {int(bad.sum())} sample(s) contain NaN or Inf (first at row {int(np.argmax(bad))})")
    y = ds.y
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise EdgeannError(f"{where}: labels must be integers 0..{len(ds.classes) - 1}, got {ds.y.dtype}")
    out = (y < 0) | (y >= len(ds.classes))
    if out.any():
        raise EdgeannError(
            f"{where}: {int(out.sum())} label(s) outside 0..{len(ds.classes) - 1} (e.g. {int(y[np.argmax(out)])} at row {int(np.argmax(out))})"
        )
    return Dataset(ds.x.astype(np.float32, copy=False), y.astype(np.int64, copy=False), ds.classes, ds.feature_names, ds.origin)


def prepare(cfg, seed: int) -> Splits:
    """Load, validate, shuffle, split and standardize the flow's data."""
    ds = validate(load_dataset(cfg, seed))
    order = np.random.default_rng(seed).permutation(len(ds))
    if cfg.max_samples:
        order = order[: cfg.max_samples]
    n = len(order)
    n_train, n_val = int(round(cfg.split.train * n)), int(round(cfg.split.val * n))
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    if min(len(p) for p in parts) == 0:
        raise EdgeannError(f"{ds.origin}: {n} samples are too few for a train/val/test split of {cfg.split.train}/{cfg.split.val}/{cfg.split.test}")
    train, val, test = (ds.subset(p) for p in parts)
    scaler = Scaler.fit(train.x, cfg.standardize)
    test_raw_x = test.x
    for part in (train, val, test):
        part.x = scaler(part.x)
    return Splits(train, val, test, scaler, test_raw_x)
