"""The Pythia 8 + FastJet jet generator: real generation, nothing mocked but an interruption."""

from __future__ import annotations

import itertools
import json

import h5py
import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from edgeann.data import jet_physics as jp  # noqa: E402
from edgeann.data import jets  # noqa: E402
from edgeann.data.jets import CLASSES, generate_jets, physics_checks  # noqa: E402
from edgeann.errors import EdgeannError  # noqa: E402

N_SAMPLE = 30  # jets per class in the shared sample
N_TINY = 4  # jets per class where only equality matters
TINY_SEED = 5


def _read(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in f}


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    return generate_jets(tmp_path_factory.mktemp("jets") / "sample.h5", N_SAMPLE, seed=3, progress=False)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A straight single-process run that the determinism and resume tests compare with."""
    return generate_jets(tmp_path_factory.mktemp("tiny") / "tiny.h5", N_TINY, seed=TINY_SEED, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_other_seed(tmp_path_factory):
    return generate_jets(tmp_path_factory.mktemp("tiny6") / "tiny6.h5", N_TINY, seed=TINY_SEED + 1, progress=False)


# --------------------------------------------------------------------------------------------
# Layout


def test_file_layout(sample):
    n, s, length = N_SAMPLE * len(CLASSES), 16, 20
    with h5py.File(sample, "r") as f:
        assert set(f) == {"features", "images", "sequences", "sequence_length", "labels", "kinematics"}
        expected = {"features": ((n, 16), np.float32), "images": ((n, s, s), np.float32), "sequences": ((n, length, 5), np.float32),
                    "sequence_length": ((n,), np.int32), "labels": ((n,), np.int64), "kinematics": ((n, 4), np.float32)}
        for name, (shape, dtype) in expected.items():
            assert f[name].shape == shape and f[name].dtype == dtype, name
        assert [str(x) for x in f["features"].attrs["names"]] == list(jp.FEATURE_NAMES)
        assert [str(x) for x in f["sequences"].attrs["names"]] == ["pt_rel", "deta", "dphi", "e_rel", "delta_r"]
        assert [str(x) for x in f["labels"].attrs["classes"]] == ["g", "q", "w", "z", "t"]
        assert [str(x) for x in f["kinematics"].attrs["names"]] == ["pt", "eta", "phi", "mass"]
        attrs = dict(f.attrs)
    assert jp.FEATURE_NAMES == (
        "j_zlogz", "j_c1_b0_mmdt", "j_c1_b1_mmdt", "j_c1_b2_mmdt", "j_c2_b1_mmdt", "j_c2_b2_mmdt", "j_d2_b1_mmdt", "j_d2_b2_mmdt",
        "j_d2_a1_b1_mmdt", "j_d2_a1_b2_mmdt", "j_m2_b1_mmdt", "j_m2_b2_mmdt", "j_n2_b1_mmdt", "j_n2_b2_mmdt", "j_mass_mmdt",
        "j_multiplicity")
    assert attrs["complete"] and attrs["seed"] == 3 and attrs["n_per_class"] == N_SAMPLE and attrs["workers"] == 1
    assert attrs["image_size"] == s and attrs["n_constituents"] == length and attrs["sqrt_s_gev"] == 13000.0
    assert list(attrs["jet_pt_window_gev"]) == [800.0, 1200.0] and attrs["jet_r"] == 0.8
    for package in ("pythia8mc", "fastjet", "edgeann"):
        assert attrs[f"{package}_version"] not in ("", "unknown")
    assert not any(p.name.endswith(".partial") for p in sample.parent.iterdir())


def test_rows_are_class_major_and_physical(sample):
    d = _read(sample)
    assert np.array_equal(d["labels"], np.repeat(np.arange(len(CLASSES)), N_SAMPLE))
    assert np.isfinite(d["features"]).all() and np.isfinite(d["images"]).all() and np.isfinite(d["sequences"]).all()
    pt, eta, _, mass = d["kinematics"].T
    assert (pt >= 800).all() and (pt <= 1200).all() and (np.abs(eta) < 2.0).all() and (mass > 0).all()
    np.testing.assert_allclose(d["images"].sum(axis=(1, 2)), 1.0, rtol=1e-5)
    multiplicity = d["features"][:, jp.FEATURE_NAMES.index("j_multiplicity")]
    lengths = d["sequence_length"]
    assert np.array_equal(lengths, np.minimum(multiplicity, 20).astype(np.int32))
    groomed = d["features"][:, jp.FEATURE_NAMES.index("j_mass_mmdt")]
    assert (groomed <= mass * (1 + 1e-4)).all()  # grooming only removes
    for seq, n in zip(d["sequences"], lengths, strict=True):
        assert (seq[n:] == 0).all()
        assert (np.diff(seq[:n, 0]) <= 0).all()  # hardest first
        # inside the R = 0.8 jet; Delta R is in (eta, phi), where a soft massive hadron can sit a
        # little beyond R although it is within R in rapidity
        assert (seq[:n, 4] < 1.2).all()


# --------------------------------------------------------------------------------------------
# Physics


def test_physics_checks_of_a_small_sample(sample):
    checks = physics_checks(sample)
    with h5py.File(sample, "r") as f:
        assert json.loads(f.attrs["physics_checks"]) == checks
    med = {c: v["median_mass_mmdt_gev"] for c, v in checks["classes"].items()}
    mult = {c: v["mean_multiplicity"] for c, v in checks["classes"].items()}
    # Thresholds with room for 30 jets per class: the W/Z peaks are narrow (median within a few GeV
    # of the pole even for 30 jets), the top median sits near 170 GeV with a tail down to m_W,
    # q/g medians are ~10 and ~60 GeV with a median uncertainty of ~10 GeV at this size, and
    # gluon jets have ~35 more constituents than quark jets (spread of the mean ~5).
    assert 70 < med["w"] < 90 and 75 < med["z"] < 100
    assert med["t"] > 140 and med["t"] > max(med["w"], med["z"]) > max(med["q"], med["g"])
    assert mult["g"] > mult["q"] + 10
    assert set(checks["checks"]) == {"w_mass_peak", "z_mass_peak", "t_mass_peak", "q_light", "g_light", "g_more_constituents_than_q"}
    png = sample.with_name(sample.stem + "_physics.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _brute_force_ecf_ratios(c: np.ndarray) -> list[float]:
    """The 13 ratios from their definitions (pT, (y, phi) Delta R measure; fjcontrib normalizes
    generalized correlators by the scalar pT sum)."""
    pt = np.hypot(c[:, 0], c[:, 1])
    y, phi = jp.rapidity(c), np.arctan2(c[:, 1], c[:, 0])
    d = np.hypot(y[:, None] - y[None], jp.delta_phi(phi[:, None], phi[None]))
    z = pt / pt.sum()

    def ecf(n, beta):
        return sum(np.prod(pt[list(k)]) * np.prod([d[i, j] ** beta for i, j in itertools.combinations(k, 2)])
                   for k in itertools.combinations(range(len(c)), n)) if n else 1.0

    def ecfg(angles, n, beta):
        total = 0.0
        for k in itertools.combinations(range(len(c)), n):
            a = sorted(d[i, j] ** beta for i, j in itertools.combinations(k, 2))
            total += np.prod(z[list(k)]) * np.prod(a if angles < 0 else a[:angles])
        return total

    out = [ecf(2, b) * ecf(0, b) / ecf(1, b) ** 2 for b in (0, 1, 2)]
    out += [ecf(3, b) * ecf(1, b) / ecf(2, b) ** 2 for b in (1, 2)]
    out += [ecf(3, b) * ecf(1, b) ** 3 / ecf(2, b) ** 3 for b in (1, 2)]
    out += [ecfg(-1, 3, 1) / ecfg(-1, 2, b) ** (3 / b) for b in (1, 2)]
    out += [ecfg(1, 3, b) / ecfg(1, 2, b) for b in (1, 2)]
    out += [ecfg(2, 3, b) / ecfg(1, 2, b) ** 2 for b in (1, 2)]
    return out


def test_energy_correlators_match_their_definitions():
    rng = np.random.default_rng(0)
    jets_ = []
    for n in (3, 6):
        pt, y, phi = rng.uniform(20, 300, n), rng.normal(0.3, 0.2, n), rng.normal(1.0, 0.2, n)
        mt = np.hypot(pt, 0.14)
        jets_.append(np.column_stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y), mt * np.cosh(y)]))
    got = jp.energy_correlation_ratios(jets_)
    for jet, row in zip(jets_, got, strict=True):
        np.testing.assert_allclose(row, _brute_force_ecf_ratios(jet), rtol=1e-9)


def test_unknown_energy_correlator_is_refused_before_reaching_cpp():
    assert {spec.func for spec in jp.ECF_SPECS} <= jp.ALLOWED_ECF_FUNCS
    fastjet = jp._fastjet()
    cs = fastjet.ClusterSequence(jp._jagged([np.array([[10.0, 0, 0, 10.0], [0, 10.0, 0, 10.0]])]),
                                 fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
    with pytest.raises(ValueError, match="not one of"):
        jp._energy_correlator(cs, jp.ECFSpec("bogus", "C2 "))  # would segfault inside fastjet


def _reference_mmdt_mass(c: np.ndarray, zcut: float = 0.1) -> float:
    """Cambridge/Aachen (E-scheme) written out, then mMDT declustering along the harder branch."""
    nodes = [(p, None) for p in c]
    active = list(range(len(c)))
    while len(active) > 1:
        p = np.array([nodes[i][0] for i in active])
        y, phi = jp.rapidity(p), np.arctan2(p[:, 1], p[:, 0])
        d2 = (y[:, None] - y[None]) ** 2 + jp.delta_phi(phi[:, None], phi[None]) ** 2
        np.fill_diagonal(d2, np.inf)
        a, b = np.unravel_index(np.argmin(d2), d2.shape)
        nodes.append((nodes[active[a]][0] + nodes[active[b]][0], (active[a], active[b])))
        active = [x for k, x in enumerate(active) if k not in (a, b)] + [len(nodes) - 1]
    node = active[0]
    while nodes[node][1] is not None:
        i, j = nodes[node][1]
        pti, ptj = np.hypot(*nodes[i][0][:2]), np.hypot(*nodes[j][0][:2])
        if min(pti, ptj) / (pti + ptj) > zcut:
            break
        node = i if pti > ptj else j
    return float(jp.pt_eta_phi_m(nodes[node][0])[3])


@pytest.fixture(scope="module")
def real_events(tmp_path_factory):
    """Visible final states and fjcore jets of a few top events."""
    mpi = str(tmp_path_factory.mktemp("events") / "mpi.init")
    jets._write_mpi_init(mpi)
    pythia = jets._make_pythia("t", 11, mpi)
    finder = jets._jet_finder()
    out = []
    while len(out) < 4:
        assert pythia.next()
        event = pythia.event
        visible = np.array([(p.px(), p.py(), p.pz(), p.e()) for p in event if p.isFinal() and p.isVisible()])
        jets._analyze_quietly(finder, event)
        found = [(p4, jets._constituents(event, finder.constituents(j))) for j, p4 in jets._candidate_jets(finder)]
        if found:
            out.append((visible, found))
    return out


def test_fjcore_in_pythia_finds_the_same_jets_as_fastjet(real_events):
    fastjet_jets = jp.antikt_jets([visible for visible, _ in real_events], min_pt=800.0)
    for (_, fjcore_jets), reference in zip(real_events, fastjet_jets, strict=True):
        assert len(fjcore_jets) == len(reference)
        for (p4, constituents), ref in zip(fjcore_jets, reference, strict=True):
            np.testing.assert_allclose(p4, ref.p4, rtol=1e-9)
            key = lambda a: a[np.lexsort(a.T)]  # noqa: E731
            np.testing.assert_allclose(key(constituents), key(ref.constituents), rtol=1e-12)


def test_mmdt_grooming_matches_a_reference_implementation(real_events):
    constituents = [found[0][1] for _, found in real_events]
    _, groomed_mass = jp.mmdt_groom(constituents)
    np.testing.assert_allclose(groomed_mass, [_reference_mmdt_mass(c) for c in constituents], rtol=1e-9)


def test_image_frame_puts_the_principal_axis_vertical():
    # Two prongs along a diagonal in (eta, phi): after rotation both sit in the central column.
    def particle(pt, eta, phi):
        return [pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)]

    c = np.array([particle(600, 0.1, 1.0), particle(300, 0.3, 1.2), particle(100, 0.35, 1.25)])
    image = jp.jet_image(c, c.sum(axis=0), 16)
    assert image.sum() == pytest.approx(1.0)
    assert image[:, 7:9].sum() == pytest.approx(1.0)  # all pT on the vertical axis
    seq, n = jp.constituent_sequence(c, c.sum(axis=0), 5)
    assert n == 3 and (seq[3:] == 0).all()
    np.testing.assert_allclose(seq[:3, 2], 0.0, atol=1e-9)  # horizontal coordinate vanishes
    assert seq[0, 1] < 0 < seq[2, 1]  # the softer prong points up (positive third moment)


# --------------------------------------------------------------------------------------------
# Determinism, resuming, existing files


def test_same_seed_gives_identical_data_whatever_the_workers(tiny, tmp_path_factory):
    again = generate_jets(tmp_path_factory.mktemp("again") / "again.h5", N_TINY, seed=TINY_SEED, workers=2, progress=False)
    a, b = _read(tiny), _read(again)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_different_seed_gives_different_data(tiny, tiny_other_seed):
    a, b = _read(tiny), _read(tiny_other_seed)
    assert not np.array_equal(a["features"], b["features"])
    assert np.array_equal(a["labels"], b["labels"])


class _Interrupt(Exception):
    pass


_REAL_GENERATE_CHUNK = jets._generate_chunk


def _interrupt_after(monkeypatch, n_chunks: int) -> list:
    """Let n_chunks chunks be generated for real, then fail as a killed run would."""
    real, calls = _REAL_GENERATE_CHUNK, []

    def generate(chunk):
        calls.append(chunk)
        if len(calls) > n_chunks:
            raise _Interrupt
        return real(chunk)

    monkeypatch.setattr(jets, "_generate_chunk", generate)
    return calls


def test_interrupted_run_resumes_to_the_same_file(tiny, tmp_path, monkeypatch):
    out = tmp_path / "resumed.h5"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Interrupt):
        generate_jets(out, N_TINY, seed=TINY_SEED, progress=False)
    assert not out.exists()
    partial = out.with_name(out.name + ".partial")
    with h5py.File(partial, "r") as f:
        assert not f.attrs["complete"] and f["_chunks_done"][...].sum() == 2
    calls = _interrupt_after(monkeypatch, 100)
    generate_jets(out, N_TINY, seed=TINY_SEED, progress=False)
    assert len(calls) == len(CLASSES) - 2  # only the missing chunks were generated
    assert not partial.exists()
    a, b = _read(tiny), _read(out)
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_partial_file_with_other_settings_is_not_mixed_in(tiny_other_seed, tmp_path, monkeypatch, caplog):
    out = tmp_path / "mixed.h5"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Interrupt):
        generate_jets(out, N_TINY, seed=TINY_SEED, progress=False)
    calls = _interrupt_after(monkeypatch, 100)
    generate_jets(out, N_TINY, seed=TINY_SEED + 1, progress=False)
    assert len(calls) == len(CLASSES)  # started afresh
    assert "afresh" in caplog.text
    a, b = _read(tiny_other_seed), _read(out)
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_complete_file_with_same_settings_is_returned_as_is(tiny, monkeypatch):
    calls = _interrupt_after(monkeypatch, 0)
    before = tiny.stat().st_mtime_ns
    assert generate_jets(tiny, N_TINY, seed=TINY_SEED, workers=2, progress=False) == tiny
    assert not calls and tiny.stat().st_mtime_ns == before


def test_complete_file_with_other_settings_is_never_overwritten(tiny):
    before = tiny.read_bytes()
    with pytest.raises(EdgeannError, match="other settings.*seed"):
        generate_jets(tiny, N_TINY, seed=TINY_SEED + 7, progress=False)
    with pytest.raises(EdgeannError, match="n_per_class"):
        generate_jets(tiny, N_TINY + 1, seed=TINY_SEED, progress=False)
    assert tiny.read_bytes() == before


# --------------------------------------------------------------------------------------------
# User errors


@pytest.mark.parametrize("kwargs", [
    {"n_per_class": 0}, {"n_per_class": -3}, {"n_per_class": 2.5}, {"n_per_class": True}, {"n_per_class": "10"},
    {"n_per_class": 5, "workers": 0}, {"n_per_class": 5, "image_size": 1}, {"n_per_class": 5, "n_constituents": 0},
    {"n_per_class": 5, "seed": -1},
])
def test_bad_arguments_raise_edgeann_error(tmp_path, kwargs):
    with pytest.raises(EdgeannError) as err:
        generate_jets(tmp_path / "bad.h5", **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.h5").exists()


def test_bad_output_paths_raise_edgeann_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(EdgeannError, match="output directory"):
        generate_jets(blocker / "jets.h5", 2)
    with pytest.raises(EdgeannError, match="directory"):
        generate_jets(tmp_path, 2)
    stranger = tmp_path / "someone_elses.h5"
    stranger.write_text("precious")
    with pytest.raises(EdgeannError, match="not a complete edgeann jet file"):
        generate_jets(stranger, 2)
    assert stranger.read_text() == "precious"
    with pytest.raises(EdgeannError, match="does not exist"):
        physics_checks(tmp_path / "missing.h5")
