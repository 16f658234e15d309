"""Per-jet physics for the jet generator: mMDT grooming, the 16 hls4ml substructure features,
the jet image and the constituent sequence (and a FastJet anti-kT reference clustering).

Momenta are float64 arrays of ``(px, py, pz, E)`` in GeV, a jet's constituents ``(N, 4)``. The
FastJet steps take a *batch* of jets and make one call into FastJet for the whole batch: the
FastJet Python package is fast in C++ but costs about a millisecond of awkward-array overhead
per call, which per jet would cost more than the physics.

FastJet / fjcontrib are used through the public awkward interface of the ``fastjet`` wheel
(``fastjet.ClusterSequence`` on jagged arrays). Its energy-correlator entry point takes the
correlator as a *string*, and an unknown string dereferences a null pointer in C++ (the
interpreter dies), so every name goes through :func:`_energy_correlator`, which accepts only the
names in :data:`ALLOWED_ECF_FUNCS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "j_zlogz",
    "j_c1_b0_mmdt",
    "j_c1_b1_mmdt",
    "j_c1_b2_mmdt",
    "j_c2_b1_mmdt",
    "j_c2_b2_mmdt",
    "j_d2_b1_mmdt",
    "j_d2_b2_mmdt",
    "j_d2_a1_b1_mmdt",
    "j_d2_a1_b2_mmdt",
    "j_m2_b1_mmdt",
    "j_m2_b2_mmdt",
    "j_n2_b1_mmdt",
    "j_n2_b2_mmdt",
    "j_mass_mmdt",
    "j_multiplicity",
)
SEQUENCE_FEATURE_NAMES: tuple[str, ...] = ("pt_rel", "deta", "dphi", "e_rel", "delta_r")
KINEMATIC_NAMES: tuple[str, ...] = ("pt", "eta", "phi", "mass")

JET_R = 0.8
MMDT_BETA = 0.0  # mMDT = soft drop with beta = 0 ...
MMDT_ZCUT = 0.1  # ... and z_cut = 0.1 (scalar_z symmetry measure, follow the harder branch)
# Reclustering radius for a jet's own constituents: larger than any distance inside an R = 0.8 jet,
# so Cambridge/Aachen never merges with the beam and exclusive_jets(1) is exactly the whole jet.
_RECLUSTER_R = 10.0


@dataclass(frozen=True)
class ECFSpec:
    """One energy-correlation ratio as fjcontrib's EnergyCorrelator computes it (pt_R measure)."""

    name: str
    func: str  # the fastjet-python name of the fjcontrib class, checked against ALLOWED_ECF_FUNCS
    npoint: int = 0
    beta: float = 1.0
    alpha: float = 0.0


# The same classes as the generator of the hls4ml jet data set (arXiv:1804.06913):
#   C_N^beta      = EnergyCorrelatorDoubleRatio(N, beta) = ECF(N+1) ECF(N-1) / ECF(N)^2
#   D_2^beta      = EnergyCorrelatorD2(beta)             = ECF(3) ECF(1)^3 / ECF(2)^3
#   D_2^(a,b)     = EnergyCorrelatorGeneralizedD2(a, b)  = e3^(a) / (e2^(b))^(3a/b)
#   M_2^beta      = EnergyCorrelatorMseries(2, beta)     = 1e3^(b) / 1e2^(b)
#   N_2^beta      = EnergyCorrelatorNseries(2, beta)     = 2e3^(b) / (1e2^(b))^2
# all evaluated on the mMDT-groomed constituents.
ECF_SPECS: tuple[ECFSpec, ...] = (
    ECFSpec("j_c1_b0_mmdt", "doubleratio", npoint=1, beta=0.0),
    ECFSpec("j_c1_b1_mmdt", "doubleratio", npoint=1, beta=1.0),
    ECFSpec("j_c1_b2_mmdt", "doubleratio", npoint=1, beta=2.0),
    ECFSpec("j_c2_b1_mmdt", "doubleratio", npoint=2, beta=1.0),
    ECFSpec("j_c2_b2_mmdt", "doubleratio", npoint=2, beta=2.0),
    ECFSpec("j_d2_b1_mmdt", "d2", beta=1.0),
    ECFSpec("j_d2_b2_mmdt", "d2", beta=2.0),
    ECFSpec("j_d2_a1_b1_mmdt", "generalizedd2", alpha=1.0, beta=1.0),
    ECFSpec("j_d2_a1_b2_mmdt", "generalizedd2", alpha=1.0, beta=2.0),
    ECFSpec("j_m2_b1_mmdt", "mseries", npoint=2, beta=1.0),
    ECFSpec("j_m2_b2_mmdt", "mseries", npoint=2, beta=2.0),
    ECFSpec("j_n2_b1_mmdt", "nseries", npoint=2, beta=1.0),
    ECFSpec("j_n2_b2_mmdt", "nseries", npoint=2, beta=2.0),
)
# Names fastjet 3.5.2.0's to_numpy_energy_correlators maps to a class; anything else crashes it.
ALLOWED_ECF_FUNCS = frozenset(
    {"ratio", "doubleratio", "c1", "c2", "d2", "generalized", "generalizedd2", "nseries", "n2", "n3", "mseries", "m2", "cseries",
     "useries", "u1", "u2", "u3"}
)


def _fastjet():
    import fastjet

    # The banner goes to stdout once per process; a data generator should not print it.
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    return fastjet


def _jagged(arrays: list[np.ndarray]):
    """A list of (N_i, 4) momentum arrays as the jagged awkward array fastjet expects."""
    import awkward as ak

    counts = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 4))
    flat = np.ascontiguousarray(flat, dtype=np.float64)
    fields = [ak.contents.NumpyArray(np.ascontiguousarray(flat[:, i])) for i in range(4)]
    record = ak.contents.RecordArray(fields, ["px", "py", "pz", "E"], parameters={"__record__": "Momentum4D"})
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def _from_jagged(array) -> list[np.ndarray]:
    """The inverse of :func:`_jagged` for the fields px, py, pz, E."""
    import awkward as ak

    counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
    flat = np.stack([ak.to_numpy(ak.flatten(array[f])).astype(np.float64) for f in ("px", "py", "pz", "E")], axis=1)
    return np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []


# --------------------------------------------------------------------------------------------
# Kinematics helpers


def pt_eta_phi_m(p4: np.ndarray) -> np.ndarray:
    """(..., 4) px, py, pz, E -> (..., 4) pt, pseudorapidity, phi in (-pi, pi], mass (0 if spacelike)."""
    px, py, pz, e = (p4[..., i] for i in range(4))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), np.sign(pz) * 1e3))
    phi = np.arctan2(py, px)
    m2 = e * e - px * px - py * py - pz * pz
    return np.stack([pt, eta, phi, np.sqrt(np.maximum(m2, 0.0))], axis=-1)


def rapidity(p4: np.ndarray) -> np.ndarray:
    e, pz = p4[..., 3], p4[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * np.log(np.maximum(e + pz, 1e-300) / np.maximum(e - pz, 1e-300))


def delta_phi(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return (np.asarray(a) - b + np.pi) % (2 * np.pi) - np.pi


# --------------------------------------------------------------------------------------------
# Clustering and grooming


@dataclass
class Jet:
    p4: np.ndarray  # (4,) px, py, pz, E
    constituents: np.ndarray  # (N, 4)

    @property
    def pt(self) -> float:
        return float(np.hypot(self.p4[0], self.p4[1]))


def antikt_jets(events: list[np.ndarray], *, radius: float = JET_R, min_pt: float = 0.0) -> list[list[Jet]]:
    """Anti-kT (E-scheme) jets with pT > min_pt of each event, hardest first, from the FastJet
    wheel. The generator clusters inside Pythia (fjcore); this is the reference it is tested against."""
    if not events:
        return []
    fastjet = _fastjet()
    import awkward as ak

    cs = fastjet.ClusterSequence(_jagged(events), fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    index = cs.constituent_index(min_pt)
    jets_p4 = cs.inclusive_jets(min_pt)
    out: list[list[Jet]] = []
    for event, jet_idx, p4s in zip(events, ak.to_list(index), ak.to_list(jets_p4), strict=True):
        jets = [Jet(np.array([p["px"], p["py"], p["pz"], p["E"]]), event[np.asarray(idx, dtype=np.int64)])
                for p, idx in zip(p4s, jet_idx, strict=True)]
        jets.sort(key=lambda j: -j.pt)
        out.append(jets)
    return out


def mmdt_groom(jets: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """mMDT (soft drop beta = 0, z_cut = 0.1) on each jet's constituents -> groomed constituents, groomed mass."""
    fastjet = _fastjet()
    import awkward as ak

    cs = fastjet.ClusterSequence(_jagged(jets), fastjet.JetDefinition(fastjet.cambridge_algorithm, _RECLUSTER_R))
    groomed = cs.exclusive_jets_softdrop_grooming(njets=1, beta=MMDT_BETA, symmetry_cut=MMDT_ZCUT, symmetry_measure="scalar_z",
                                                  R0=JET_R, recursion_choice="larger_pt")
    return _from_jagged(groomed.constituents), ak.to_numpy(groomed.msoftdrop).astype(np.float64)


def _energy_correlator(cs, spec: ECFSpec) -> np.ndarray:
    # An unknown name reaches a null pointer inside the C++ extension and kills the interpreter.
    if spec.func not in ALLOWED_ECF_FUNCS:
        raise ValueError(f"energy correlator {spec.func!r} is not one of {sorted(ALLOWED_ECF_FUNCS)}")
    values = cs.exclusive_jets_energy_correlator(njets=1, beta=float(spec.beta), npoint=int(spec.npoint), angles=-1,
                                                 alpha=float(spec.alpha), func=spec.func)
    return np.asarray(values, dtype=np.float64)


def energy_correlation_ratios(jets: list[np.ndarray], specs: tuple[ECFSpec, ...] = ECF_SPECS) -> np.ndarray:
    """(n_jets, len(specs)) ECF ratios of each jet (all its constituents). Undefined ratios (a jet
    of one particle has no pair, 0/0) are set to 0."""
    fastjet = _fastjet()
    cs = fastjet.ClusterSequence(_jagged(jets), fastjet.JetDefinition(fastjet.cambridge_algorithm, _RECLUSTER_R))
    out = np.stack([_energy_correlator(cs, spec) for spec in specs], axis=1)
    return np.where(np.isfinite(out), out, 0.0)


def hls4ml_features(jets: list[Jet]) -> np.ndarray:
    """(n_jets, 16) features in FEATURE_NAMES order, float64.

    zlogz and multiplicity use the ungroomed constituents (as in the hls4ml data set, where
    only names ending in _mmdt are groomed); z = pT_i / pT_jet.
    """
    groomed, groomed_mass = mmdt_groom([j.constituents for j in jets])
    ecf = energy_correlation_ratios(groomed)
    zlogz = np.empty(len(jets))
    for i, jet in enumerate(jets):
        z = np.hypot(jet.constituents[:, 0], jet.constituents[:, 1]) / jet.pt
        z = z[z > 0]
        zlogz[i] = float(np.sum(z * np.log(z)))
    multiplicity = np.array([len(j.constituents) for j in jets], dtype=np.float64)
    return np.column_stack([zlogz, ecf, groomed_mass, multiplicity])


# --------------------------------------------------------------------------------------------
# Jet image and constituent sequence (one shared frame)


def jet_frame(constituents: np.ndarray, jet_p4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each constituent's (vertical, horizontal) position in the image frame, and pT.

    Positions start as (eta - eta_jet, phi - phi_jet), are translated to the pT-weighted
    centroid and rotated so that the principal axis of the pT-weighted (eta, phi) distribution
    is vertical; then each axis is flipped so that its pT-weighted third moment is >= 0 (the
    softer, farther prong of a two-prong jet points up). Rotation about the centroid preserves
    distances, so the R = 0.8 cone still fits a 2R x 2R square.
    """
    kin = pt_eta_phi_m(constituents)
    jet = pt_eta_phi_m(jet_p4)
    pt = kin[:, 0]
    pos = np.column_stack([kin[:, 1] - jet[1], delta_phi(kin[:, 2], jet[2])])
    w = pt / pt.sum()
    pos = pos - w @ pos
    cov = (pos * w[:, None]).T @ pos
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    vertical = eigvec[:, 1] if eigval[1] > 0 else np.array([1.0, 0.0])
    horizontal = np.array([vertical[1], -vertical[0]])
    frame = np.column_stack([pos @ vertical, pos @ horizontal])
    for axis in range(2):
        if float(w @ frame[:, axis] ** 3) < 0:
            frame[:, axis] = -frame[:, axis]
    return frame, pt


def jet_image(constituents: np.ndarray, jet_p4: np.ndarray, size: int, radius: float = JET_R) -> np.ndarray:
    """(size, size) pT-weighted image over [-R, R]^2 in the jet frame, rows = vertical axis
    (row 0 at -R), columns = horizontal; constituents beyond the square go to the edge pixel;
    normalized to unit sum."""
    frame, pt = jet_frame(constituents, jet_p4)
    return _image(frame, pt, size, radius)


def constituent_sequence(constituents: np.ndarray, jet_p4: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """(length, 5) features of the hardest constituents, zero-padded, and the true length.

    Columns (SEQUENCE_FEATURE_NAMES): pT_i/pT_jet, vertical and horizontal position in the image
    frame (rotated delta-eta, delta-phi), E_i/E_jet, and delta-R to the jet axis in (eta, phi).
    """
    frame, pt = jet_frame(constituents, jet_p4)
    return _sequence(constituents, jet_p4, frame, pt, length)


def image_and_sequence(constituents: np.ndarray, jet_p4: np.ndarray, size: int, length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """jet_image and constituent_sequence of one jet, sharing the frame."""
    frame, pt = jet_frame(constituents, jet_p4)
    return (_image(frame, pt, size, JET_R), *_sequence(constituents, jet_p4, frame, pt, length))


def _image(frame: np.ndarray, pt: np.ndarray, size: int, radius: float) -> np.ndarray:
    pix = np.clip(np.floor((frame + radius) / (2 * radius) * size).astype(np.int64), 0, size - 1)
    image = np.zeros((size, size), dtype=np.float64)
    np.add.at(image, (pix[:, 0], pix[:, 1]), pt)
    return image / image.sum()


def _sequence(constituents: np.ndarray, jet_p4: np.ndarray, frame: np.ndarray, pt: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    jet = pt_eta_phi_m(jet_p4)
    kin = pt_eta_phi_m(constituents)
    order = np.argsort(-pt, kind="stable")[:length]
    dr = np.hypot(kin[:, 1] - jet[1], delta_phi(kin[:, 2], jet[2]))
    seq = np.zeros((length, len(SEQUENCE_FEATURE_NAMES)), dtype=np.float64)
    n = len(order)
    seq[:n] = np.column_stack([pt[order] / jet[0], frame[order, 0], frame[order, 1], constituents[order, 3] / jet_p4[3], dr[order]])
    return seq, n
