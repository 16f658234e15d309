"""The built-in data sources (``data.source`` in a flow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeann.config import expand
from edgeann.data import Dataset, register_source
from edgeann.errors import EdgeannError

JET_CLASSES = ["g", "q", "w", "z", "t"]  # the hls4ml jet-tagging order


@register_source("synthetic")
def synthetic(cfg, seed: int) -> Dataset:
    """Clusters in a 6-d latent space seen through a fixed nonlinear map: deterministic per seed."""
    problem = np.random.default_rng(20240611)  # the same problem for every seed
    centers = problem.normal(0.0, 1.2, (cfg.n_classes, 6))
    mix = problem.normal(0.0, 1.0, (6, cfg.n_features)) / np.sqrt(6)
    bend = problem.normal(0.0, 1.0, (6, cfg.n_features)) / np.sqrt(6)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, cfg.n_classes, cfg.n_samples)
    z = centers[y] + rng.normal(0.0, 1.0, (cfg.n_samples, 6))
    x = z @ mix + 0.5 * np.sin(2.0 * z @ bend) + 0.2 * rng.normal(size=(cfg.n_samples, cfg.n_features))
    if cfg.sequence_length:  # step t sees the latent point through its own map, the last steps through the flat one
        steps = np.arange(cfg.sequence_length)[:, None, None]
        turn = problem.normal(0.0, 1.0, (cfg.sequence_length, 6, cfg.n_features)) / np.sqrt(6)
        fade = np.exp(-0.5 * (cfg.sequence_length - 1 - steps))  # (T, 1, 1)
        x = (fade * x[None] + (1 - fade) * np.einsum("nl,tlf->tnf", z, turn)).transpose(1, 0, 2)
        x = x + 0.3 * rng.normal(size=x.shape)
    names = [f"f{i}" for i in range(cfg.n_features)]
    classes = JET_CLASSES if cfg.n_classes == 5 else [f"c{i}" for i in range(cfg.n_classes)]
    return Dataset(x.astype(np.float32), y.astype(np.int64), classes, names, origin="synthetic data")


def _check_file(path: Path) -> Path:
    path = expand(path)
    if not path.is_file():
        raise EdgeannError(f"data file {path} not found")
    return path


def _classes(cfg, y: np.ndarray, stored) -> list[str]:
    if cfg.classes:
        return list(cfg.classes)
    if stored is not None:
        return [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(stored).ravel()]
    n = int(y.max()) + 1 if y.size and np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y)) else 1
    return [str(i) for i in range(max(n, 2))]


@register_source("npz")
def npz(cfg, seed: int) -> Dataset:
    path = _check_file(cfg.path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            for key in (cfg.features, cfg.labels):
                if key not in keys:
                    raise EdgeannError(f"{path}: no array named {key!r} (it has: {', '.join(keys) or 'none'})")
            x, y = z[cfg.features], z[cfg.labels]
            stored = z["classes"] if "classes" in keys else None
    except EdgeannError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), OSError ...
        raise EdgeannError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return Dataset(x, y, _classes(cfg, y, stored), None, origin=str(path))


@register_source("hdf5")
def hdf5(cfg, seed: int) -> Dataset:
    import h5py

    path = _check_file(cfg.path)
    try:
        with h5py.File(path, "r") as f:
            for key in (cfg.features, cfg.labels):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise EdgeannError(f"{path}: no dataset named {key!r} (it has: {', '.join(f.keys()) or 'none'})")
            x, y = f[cfg.features][()], f[cfg.labels][()]
            stored = f[cfg.labels].attrs.get("classes")
            names = f[cfg.features].attrs.get("names")
    except EdgeannError:
        raise
    except Exception as e:  # OSError for a corrupt or non-HDF5 file
        raise EdgeannError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {e})") from None
    feature_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None
    return Dataset(x, y, _classes(cfg, y, stored), feature_names, origin=str(path))


@register_source("openml")
def openml(cfg, seed: int) -> Dataset:
    """The hls4ml jet data set (830k jets, 16 features) from OpenML, cached under ``cache_dir``."""
    from sklearn.datasets import fetch_openml

    cache = expand(cfg.cache_dir)
    try:
        bunch = fetch_openml(name=cfg.name, version=1, data_home=str(cache), as_frame=False, parser="liac-arff",
                             n_retries=1, delay=0.5)
    except Exception as e:
        raise EdgeannError(
            f"cannot load OpenML data set {cfg.name!r} (not in the cache at {cache}, and downloading failed: "
            f"{type(e).__name__}); on machines without internet use data.source: jets"
        ) from None
    labels = np.asarray(bunch.target).astype(str)
    classes = [c for c in JET_CLASSES if c in set(labels)] or sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[s] for s in labels], np.int64)
    return Dataset(np.asarray(bunch.data, np.float32), y, classes, list(bunch.feature_names), origin=f"OpenML {cfg.name}")


@register_source("jets")
def jets(cfg, seed: int) -> Dataset:
    """Generated jets; the file is made (and cached) the first time a flow asks for it."""
    import h5py

    path = cfg.file()
    if not path.is_file() and cfg.path is not None:  # generate only into the cache: a typo must not start a long job
        raise EdgeannError(
            f"data.path {cfg.path}: no such jet file; generate it with `edgeann data generate jets --n-per-class "
            f"{cfg.n_per_class} --seed {cfg.generator_seed} --image-size {cfg.image_size} --n-constituents "
            f"{cfg.n_constituents} --workers {cfg.workers} --out {cfg.path}`, or drop data.path to use the cache")
    if not path.is_file():
        from edgeann.data.jets import generate_jets

        print(f"generating {5 * cfg.n_per_class} jets with Pythia 8 + FastJet into {path} (cached for later runs)")
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_jets(path, cfg.n_per_class, seed=cfg.generator_seed, workers=cfg.workers, image_size=cfg.image_size,
                      n_constituents=cfg.n_constituents)
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise EdgeannError(f"{path}: the jet file is incomplete; delete it to generate it again")
            key = cfg.representation
            if key not in f:
                raise EdgeannError(f"{path}: no {key!r} dataset (it has: {', '.join(f.keys())})")
            x = f[key][()]
            y = f["labels"][()]
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in f["labels"].attrs["classes"]]
            names = f[key].attrs.get("names")
    except EdgeannError:
        raise
    except Exception as e:
        raise EdgeannError(f"{path}: not a readable jet file ({type(e).__name__}: {e})") from None
    feature_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None
    if key == "images":  # one channel, channels-last like every tensor edgeann passes on: (N, H, W, 1)
        x = x[..., None]
    return Dataset(x.astype(np.float32), y.astype(np.int64), classes, feature_names, origin=str(path))
