import h5py
import numpy as np
import pytest

from edgeann.config import ArrayFileData, JetsData, OpenMLData, SyntheticData, load_flow
from edgeann.data import Scaler, load_dataset, prepare
from edgeann.errors import EdgeannError


def test_synthetic_is_deterministic_and_balanced():
    cfg = SyntheticData(source="synthetic", n_samples=2000)
    a, b = load_dataset(cfg, 1), load_dataset(cfg, 1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, load_dataset(cfg, 2).x)
    assert a.x.shape == (2000, 16) and a.x.dtype == np.float32 and set(np.unique(a.y)) == set(range(5))


def test_split_sizes_and_scaler_fit_on_train_only():
    splits = prepare(SyntheticData(source="synthetic", n_samples=1000, split={"train": 0.5, "val": 0.25, "test": 0.25}), 0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (500, 250, 250)
    assert np.allclose(splits.train.x.mean(axis=0), 0, atol=1e-5) and np.allclose(splits.train.x.std(axis=0), 1, atol=1e-3)
    assert not np.allclose(splits.test.x.mean(axis=0), 0, atol=1e-5)


def test_scaler_round_trip(tmp_path):
    s = Scaler.fit(np.random.default_rng(0).normal(3, 2, (100, 4)).astype(np.float32))
    s.save(tmp_path / "scaler.json")
    t = Scaler.load(tmp_path / "scaler.json")
    assert np.array_equal(s.mean, t.mean) and np.array_equal(s.std, t.std)


def test_npz_and_hdf5_named_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 7)).astype(np.float32), rng.integers(0, 3, 300)
    np.savez(tmp_path / "d.npz", feats=x, lab=y, classes=np.array(["a", "b", "c"]))
    ds = load_dataset(ArrayFileData(source="npz", path=tmp_path / "d.npz", features="feats", labels="lab"), 0)
    assert np.array_equal(ds.x, x) and ds.classes == ["a", "b", "c"]
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = x
        f["y"] = y
        f["y"].attrs["classes"] = ["a", "b", "c"]
    ds = load_dataset(ArrayFileData(source="hdf5", path=tmp_path / "d.h5"), 0)
    assert np.array_equal(ds.y, y) and ds.classes == ["a", "b", "c"]


@pytest.mark.parametrize("source, suffix", [("npz", ".npz"), ("hdf5", ".h5")])
def test_missing_arrays_and_corrupt_files_are_named(tmp_path, source, suffix):
    path = tmp_path / f"d{suffix}"
    if source == "npz":
        np.savez(path, other=np.zeros(3))
    else:
        with h5py.File(path, "w") as f:
            f["other"] = np.zeros(3)
    with pytest.raises(EdgeannError, match=r"no (array|dataset) named 'x' \(it has: other\)"):
        load_dataset(ArrayFileData(source=source, path=path), 0)
    path.write_bytes(b"\x89HDF garbage" if source == "hdf5" else b"garbage")
    with pytest.raises(EdgeannError, match="not a readable"):
        load_dataset(ArrayFileData(source=source, path=path), 0)


def test_too_few_samples_for_the_split(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3)), y=np.array([0, 1]))
    with pytest.raises(EdgeannError, match="too few"):
        prepare(ArrayFileData(source="npz", path=tmp_path / "d.npz"), 0)


def test_openml_without_internet_says_what_to_do(tmp_path):
    cfg = OpenMLData(source="openml", name="edgeann_no_such_dataset_xyz", cache_dir=tmp_path)
    with pytest.raises(EdgeannError, match="cannot load OpenML data set"):
        load_dataset(cfg, 0)


def test_jets_source_generates_once_into_the_cache_and_serves_every_representation(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEANN_CACHE", str(tmp_path))
    cfg = JetsData(source="jets", n_per_class=6, workers=1)
    ds = load_dataset(cfg, 0)
    assert ds.x.shape == (30, 16) and ds.feature_names[0] == "j_zlogz" and ds.classes == ["g", "q", "w", "z", "t"]
    assert np.bincount(ds.y).tolist() == [6] * 5
    cached = cfg.file()
    assert cached.parent == tmp_path / "jets"
    stamp = cached.stat().st_mtime_ns
    for rep, shape in [("images", (30, 16, 16, 1)), ("sequences", (30, 20, 5))]:  # images channels-last
        assert load_dataset(cfg.model_copy(update={"representation": rep}), 0).x.shape == shape
    assert cached.stat().st_mtime_ns == stamp  # cached, not generated again
    explicit = load_dataset(cfg.model_copy(update={"path": cached}), 0)  # an explicit path to an existing file
    assert np.array_equal(explicit.x, ds.x)


def test_default_flow_trains_on_generated_jets():
    flow = load_flow("jet_mlp")
    assert flow.data.source == "jets" and flow.data.representation == "features"
    assert flow.data.file().name == "jets_n5000_seed1_img16_seq20.h5"


def test_incomplete_jet_file_is_refused(tmp_path):
    with h5py.File(tmp_path / "j.h5", "w") as f:
        f.attrs["complete"] = False
    with pytest.raises(EdgeannError, match="incomplete"):
        load_dataset(JetsData(source="jets", path=tmp_path / "j.h5"), 0)


def test_a_missing_explicit_jet_file_is_refused_with_a_command_that_makes_it(tmp_path, capsys):
    """A typo in data.path must not start a long generation into the mistyped path; the advice works."""
    import shlex

    from edgeann.cli import main

    cfg = JetsData(source="jets", n_per_class=3, workers=1, path=tmp_path / "nothere.h5")
    with pytest.raises(EdgeannError, match=r"data.path .*nothere.h5: no such jet file; generate it with `edgeann data "
                                           r"generate jets --n-per-class 3 .*`, or drop data.path") as e:
        load_dataset(cfg, 0)
    assert not (tmp_path / "nothere.h5").exists()
    command = str(e.value).split("`")[1]
    assert main(shlex.split(command)[1:] + ["-q"]) == 0
    capsys.readouterr()
    assert load_dataset(cfg, 0).x.shape == (15, 16)
