"""Offline jets: a Pythia 8 + FastJet generator of gluon, quark, W, Z and top jets near 1 TeV.

Physics choices (for the physicist reading the file)
----------------------------------------------------
* **Collisions.** pp at sqrt(s) = 13 TeV, Pythia 8.317 default tune (Monash), with initial- and
  final-state showers, multiparton interactions (underlying event), hadronization and hadron
  decays; no pileup, no detector. The hard process has 900 < pT-hat < 1100 GeV.
* **Classes and processes** (label index = position in ``CLASSES``, the hls4ml order):

  ====  ===========  ==================================================================
  0 g   gluon        ``HardQCD:gg2gg``, ``HardQCD:qqbar2gg`` (both outgoing partons are gluons)
  1 q   light quark  ``HardQCD:qq2qq``, ``HardQCD:qg2qg``; the jet must match a u, d or s quark
  2 w   W boson      ``WeakBosonAndParton:qqbar2Wg``, ``qg2Wq``; W -> q q' only (24:onIfAny = 1-5)
  3 z   Z boson      ``WeakBosonAndParton:qqbar2gmZg``, ``qg2gmZq`` with ``WeakZ0:gmZmode = 2``
                     (pure Z, no gamma*); Z -> q qbar only (23:onIfAny = 1-5)
  4 t   top quark    ``Top:gg2ttbar``, ``Top:qqbar2ttbar``; t -> W b, W -> q q' (fully hadronic)
  ====  ===========  ==================================================================

* **Jets.** Anti-kT, R = 0.8, E-scheme, on all final-state *visible* particles (neutrinos and
  other invisibles dropped), clustered with fjcore (FastJet's core, run inside Pythia through
  SlowJet; the tests check it finds the same jets as the FastJet wheel, which does the
  grooming and substructure). Of each event we keep one jet: the hardest
  jet with 800 < pT < 1200 GeV and |eta| < 2.0 that is *matched* to the class's hard object:
  Delta R(jet, object) < 0.8 in (rapidity, phi), using the object after initial-state recoil
  (Pythia's bottom copy). For W, Z and top the jet must also *contain* the decay quarks
  (each within Delta R < 0.8 of the jet axis: q q' for W/Z, b q q' for top), so the boson / top
  is fully merged; for q and g the matched parton must have the right flavour. Events without
  such a jet are skipped. Matching rather than "leading jet only" keeps W/Z/top events whose
  recoiling parton happens to be harder.
* **Grooming.** mMDT = soft drop with beta = 0, z_cut = 0.1 (scalar-z, follow the harder
  branch) on the Cambridge/Aachen reclustering of the jet (fjcontrib SoftDrop).
* **Features** (the 16 of the hls4ml jet data set, arXiv:1804.06913, same fjcontrib classes as
  its generator): energy-correlation ratios C1^(b=0,1,2), C2^(1,2), D2^(1,2), D2^(a=1,b=1,2),
  M2^(1,2), N2^(1,2) with the pT, Delta R measure on the mMDT-groomed constituents, the mMDT
  mass, and on the *ungroomed* jet sum z log z (z = pT_i / pT_jet; the original generator used
  energy fractions E_i / E_jet, which differ slightly away from eta = 0) and the constituent count. D2^(1,1)
  equals D2^(b=1) by definition, as in the original data set. A groomed jet of one particle has
  no angular structure; its undefined (0/0) ratios are stored as 0.
* **Jet image.** pT-weighted (eta, phi) histogram of the constituents, translated to the
  pT-weighted centroid, rotated so the principal axis is vertical and flipped so each axis has a
  non-negative pT-weighted third moment; ``image_size`` x ``image_size`` pixels over
  [-0.8, 0.8]^2 (rows = vertical axis, row 0 at the bottom, -0.8), normalized to unit sum.
* **Constituent sequence.** The ``n_constituents`` hardest constituents: pT_i/pT_jet, position in
  the image frame (vertical = rotated delta-eta, horizontal = rotated delta-phi), E_i/E_jet and
  Delta R to the jet axis in (eta, phi); zero-padded, with the true length.

Reproducibility and files
-------------------------
Class c is made in chunks of ``CHUNK_SIZE`` jets; chunk k runs its own Pythia, seeded from
sha256(seed, class, k), so the output depends on the seed only, never on ``workers``. Rows
are class-major: rows ``[c * n_per_class, (c + 1) * n_per_class)`` hold class c, in chunk
order. Chunks are written, as they finish, into ``<out>.partial`` beside ``out``; an interrupted
run resumes from it, and only a finished file is moved (atomically) to ``out``. Pythia's MPI
tables are computed once per run with a fixed seed and read by every chunk (``_write_mpi_init``).

What to expect (200 jets per class, seed 1): median mMDT mass g 61, q 8, W 79, Z 89, top 171 GeV;
mean multiplicity g 96, q 59, W 53, Z 55, top 91. mMDT leaves QCD jet masses flat in log(m), so
gluon jets are not far below the W; quark jets often groom down to a hard core of a few GeV.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeann.data.jet_physics import (
    FEATURE_NAMES,
    JET_R,
    KINEMATIC_NAMES,
    MMDT_BETA,
    MMDT_ZCUT,
    SEQUENCE_FEATURE_NAMES,
    Jet,
    delta_phi,
    hls4ml_features,
    image_and_sequence,
    pt_eta_phi_m,
    rapidity,
)
from edgeann.errors import EdgeannError

__all__ = ["CLASSES", "FEATURE_NAMES", "SEQUENCE_FEATURE_NAMES", "generate_jets", "physics_checks", "plot_physics"]

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("g", "q", "w", "z", "t")
SQRT_S_GEV = 13000.0
PTHAT_RANGE_GEV = (900.0, 1100.0)
JET_PT_WINDOW_GEV = (800.0, 1200.0)
JET_ABS_ETA_MAX = 2.0
MATCH_DR = 0.8
CHUNK_SIZE = 100
FORMAT_VERSION = 1
ROW_ORDER = "class-major: rows [c*n_per_class, (c+1)*n_per_class) hold class c = index in classes, in chunk order"
# Reference masses for the physics checks, GeV.
MASS_PEAKS_GEV = {"w": 80.4, "z": 91.2, "t": 173.0}
MASS_TOLERANCE = 0.10
# q/g jets must be "light": median mMDT mass below the W window (m_W - 10%). Not lower: mMDT makes
# the QCD mass distribution flat in log(m), and at pT ~ 1 TeV the gluon median is ~60 GeV (a
# leading-log estimate gives ~60 GeV, Pythia 61 GeV for 200 jets) while the quark median is ~5-10 GeV.
LIGHT_JET_MAX_MEDIAN_GEV = 72.0
# A chunk that needs more events than this per jet has a broken selection; stop instead of spinning.
_MAX_EVENTS_PER_JET = 50
_MPI_INIT_SEED = 20180617
# Particles beyond this |eta| cannot reach a jet with |eta| < 2 and R = 0.8.
_PARTICLE_ABS_ETA_MAX = 10.0

_LIGHT_QUARKS = (1, 2, 3)
_QUARKS = (1, 2, 3, 4, 5)
_DECAY_TO_QUARKS = "1 2 3 4 5"
_PROCESSES: dict[str, tuple[str, ...]] = {
    "g": ("HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on"),
    "q": ("HardQCD:qq2qq = on", "HardQCD:qg2qg = on"),
    "w": ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", "24:onMode = off", f"24:onIfAny = {_DECAY_TO_QUARKS}"),
    "z": ("WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on", "WeakZ0:gmZmode = 2", "23:onMode = off",
          f"23:onIfAny = {_DECAY_TO_QUARKS}"),
    "t": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "6:onMode = off", "6:onIfAny = 5", "24:onMode = off",
          f"24:onIfAny = {_DECAY_TO_QUARKS}"),
}
_HARD_OBJECT_IDS = {"g": (21,), "q": _LIGHT_QUARKS, "w": (24,), "z": (23,), "t": (6,)}
_CLASS_LABELS = {"g": "gluon", "q": "light quark", "w": r"W $\to q\bar{q}'$", "z": r"Z $\to q\bar{q}$",
                 "t": r"top $\to bq\bar{q}'$"}
_PEAK_LABELS = {"w": "$m_W$", "z": "$m_Z$", "t": "$m_t$"}
_DATASETS = ("features", "images", "sequences", "sequence_length", "labels", "kinematics")
_DONE = "_chunks_done"


# --------------------------------------------------------------------------------------------
# Settings: what determines the content of a file


@dataclass(frozen=True)
class _Settings:
    n_per_class: int
    seed: int
    image_size: int
    n_constituents: int

    @classmethod
    def checked(cls, n_per_class, seed, image_size, n_constituents) -> _Settings:
        return cls(
            n_per_class=_int_arg("n_per_class", n_per_class, 1, 10**9),
            seed=_int_arg("seed", seed, 0, 2**63 - 1),
            image_size=_int_arg("image_size", image_size, 2, 512),
            n_constituents=_int_arg("n_constituents", n_constituents, 1, 10_000),
        )

    def content(self) -> dict:
        """Everything the rows depend on except the generator versions."""
        return {
            "format_version": FORMAT_VERSION,
            "seed": self.seed,
            "n_per_class": self.n_per_class,
            "image_size": self.image_size,
            "n_constituents": self.n_constituents,
            "classes": list(CLASSES),
            "chunk_size": CHUNK_SIZE,
            "sqrt_s_gev": SQRT_S_GEV,
            "pthat_range_gev": list(PTHAT_RANGE_GEV),
            "jet_pt_window_gev": list(JET_PT_WINDOW_GEV),
            "jet_abs_eta_max": JET_ABS_ETA_MAX,
            "jet_r": JET_R,
            "match_dr": MATCH_DR,
            "mmdt_beta": MMDT_BETA,
            "mmdt_zcut": MMDT_ZCUT,
            "mpi_init_seed": _MPI_INIT_SEED,
            "processes": {c: list(p) for c, p in _PROCESSES.items()},
        }

    def fingerprint(self) -> str:
        """What a partial file must agree on before it is resumed: content and versions."""
        return json.dumps({**self.content(), "versions": _versions()}, sort_keys=True)

    @property
    def n_total(self) -> int:
        return self.n_per_class * len(CLASSES)


def _int_arg(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EdgeannError(f"{name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise EdgeannError(f"{name} must be between {lo} and {hi}, got {value}")
    return int(value)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("pythia8mc", "fastjet", "edgeann"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


# --------------------------------------------------------------------------------------------
# Chunks: the unit of work, of seeding and of resuming


@dataclass(frozen=True)
class _Chunk:
    class_index: int
    index: int  # within the class
    n_jets: int
    row_start: int
    done_slot: int  # position in the partial file's done-flags
    pythia_seed: int
    image_size: int
    n_constituents: int
    mpi_init_file: str

    @property
    def class_name(self) -> str:
        return CLASSES[self.class_index]


def _pythia_seed(seed: int, class_name: str, chunk_index: int) -> int:
    digest = hashlib.sha256(f"edgeann.jets|{seed}|{class_name}|{chunk_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 900_000_000 + 1  # Pythia takes 1..900000000; 0 means "use the clock"


def _chunks_per_class(settings: _Settings) -> int:
    return math.ceil(settings.n_per_class / CHUNK_SIZE)


def _plan(settings: _Settings, mpi_init_file: str) -> list[_Chunk]:
    """All chunks, interleaved across classes so a partial file and the progress bar cover every class."""
    per_class = _chunks_per_class(settings)
    chunks = []
    for k in range(per_class):
        for c, name in enumerate(CLASSES):
            n = min(CHUNK_SIZE, settings.n_per_class - k * CHUNK_SIZE)
            chunks.append(_Chunk(c, k, n, c * settings.n_per_class + k * CHUNK_SIZE, c * per_class + k,
                                 _pythia_seed(settings.seed, name, k), settings.image_size, settings.n_constituents, mpi_init_file))
    return chunks


# --------------------------------------------------------------------------------------------
# Event generation (runs in the worker processes)


def _pythia_settings(class_name: str, pythia_seed: int, mpi_init_file: str, mpi_reuse: int = 2) -> list[str]:
    if any(ch.isspace() for ch in mpi_init_file):
        raise RuntimeError(f"Pythia cannot read a file name with blanks ({mpi_init_file!r}); point TMPDIR elsewhere")
    return [
        f"Beams:eCM = {SQRT_S_GEV}",
        f"PhaseSpace:pTHatMin = {PTHAT_RANGE_GEV[0]}",
        f"PhaseSpace:pTHatMax = {PTHAT_RANGE_GEV[1]}",
        *_PROCESSES[class_name],
        "Print:quiet = on",
        "Next:numberCount = 0",
        "Random:setSeed = on",
        f"Random:seed = {pythia_seed}",
        f"MultipartonInteractions:reuseInit = {mpi_reuse}",
        f"MultipartonInteractions:initFile = {mpi_init_file}",
    ]


def _make_pythia(class_name: str, pythia_seed: int, mpi_init_file: str, mpi_reuse: int = 2):
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for line in _pythia_settings(class_name, pythia_seed, mpi_init_file, mpi_reuse):
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialize for class {class_name!r}")
    return pythia


def _write_mpi_init(path: str) -> None:
    """The multiparton-interaction tables every chunk reads instead of recomputing them.

    Pythia's MPI initialization is the same physics for every class here (it depends on the
    beams, PDFs and tune, not on the hard process) but costs ~0.4 s, as much as generating tens
    of jets. It is made once per run with a fixed seed, so its content, and hence every event,
    is reproducible.
    """
    _make_pythia(CLASSES[0], _MPI_INIT_SEED, path, mpi_reuse=1)


def _jet_finder():
    """Anti-kT R = 0.8 on the visible final state, run inside Pythia (SlowJet with fjcore).

    fjcore is FastJet's own core (bundled in Pythia), so the jets are FastJet's anti-kT jets
    (E-scheme, (y, phi) distance); running it in C++ keeps the ~600 particles of an event from
    crossing into Python, which cost more than the clustering. tests/data/test_jets.py checks
    that the FastJet wheel finds the same jets. Arguments: power -1 (anti-kT), R, pT_min,
    particle |eta| max, select 2 (final-state visible), massSet 2 (true masses), no hook,
    useFJcore, useStandardR.
    """
    import pythia8mc

    return pythia8mc.SlowJet(-1, JET_R, JET_PT_WINDOW_GEV[0], _PARTICLE_ABS_ETA_MAX, 2, 2, None, True, True)


_fjcore_banner_done = False


def _analyze_quietly(finder, event) -> bool:
    """finder.analyze(event); the first call in a process prints fjcore's banner to the C-level
    stdout, which Python cannot switch off, so that one call runs with fd 1 on /dev/null."""
    global _fjcore_banner_done
    if _fjcore_banner_done:
        return finder.analyze(event)
    import sys

    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to protect
        _fjcore_banner_done = True
        return finder.analyze(event)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            return finder.analyze(event)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        _fjcore_banner_done = True


def _candidate_jets(finder) -> list[tuple[int, np.ndarray]]:
    """(index in finder, px py pz E) of the jets found, hardest first."""
    jets = []
    for j in range(finder.sizeJet()):
        p = finder.p(j)
        jets.append((j, np.array([p.px(), p.py(), p.pz(), p.e()])))
    jets.sort(key=lambda jet: -math.hypot(jet[1][0], jet[1][1]))
    return jets


def _constituents(event, indices) -> np.ndarray:
    rows = []
    for i in indices:
        p = event[i]
        rows.append((p.px(), p.py(), p.pz(), p.e()))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


@dataclass(frozen=True)
class _Truth:
    """A hard object the selected jet must match, and the decay quarks it must contain."""

    y: float
    phi: float
    daughters: tuple[tuple[float, float], ...] = ()


def _y_phi(particle) -> tuple[float, float]:
    return float(particle.y()), float(particle.phi())


def _decay_quarks(event, i: int) -> list[tuple[float, float]]:
    """(y, phi) of the quarks a resonance decays into, through W from top decays."""
    out = []
    last = event[event[i].iBotCopyId()]
    for d in last.daughterList():
        child = event[d]
        if child.idAbs() in _QUARKS:
            out.append(_y_phi(child))
        elif child.idAbs() == 24:
            out.extend(_decay_quarks(event, d))
    return out


def _truth_objects(event, class_name: str) -> list[_Truth]:
    """The hard-process outgoing objects (event record entries 5 and 6 of a 2 -> 2) of the wanted kind."""
    wanted = _HARD_OBJECT_IDS[class_name]
    truths = []
    for i in (5, 6):
        hard = event[i]
        if hard.idAbs() not in wanted:
            continue
        last = event[hard.iBotCopyId()]
        if class_name in ("w", "z", "t"):
            truths.append(_Truth(*_y_phi(last), tuple(_decay_quarks(event, i))))
        else:
            truths.append(_Truth(*_y_phi(last)))
    return truths


def _matches(p4: np.ndarray, truths: list[_Truth]) -> bool:
    """In the pT window and eta range, and matched to (and, for decays, containing) a hard object."""
    lo, hi = JET_PT_WINDOW_GEV
    pt, eta, phi, _ = pt_eta_phi_m(p4)
    if not (lo <= pt <= hi and abs(eta) < JET_ABS_ETA_MAX):
        return False
    y = float(rapidity(p4))

    def near(obj_y: float, obj_phi: float) -> bool:
        return math.hypot(obj_y - y, float(delta_phi(obj_phi, phi))) < MATCH_DR

    return any(near(t.y, t.phi) and all(near(*d) for d in t.daughters) for t in truths)


def _generate_chunk(chunk: _Chunk) -> tuple[_Chunk, dict[str, np.ndarray]]:
    """Generate exactly chunk.n_jets selected jets (one per accepted event) and their representations."""
    pythia = _make_pythia(chunk.class_name, chunk.pythia_seed, chunk.mpi_init_file)
    finder = _jet_finder()
    selected: list[Jet] = []
    max_events = _MAX_EVENTS_PER_JET * chunk.n_jets + 100
    n_events = 0
    while len(selected) < chunk.n_jets:
        n_events += 1
        if n_events > max_events:
            raise RuntimeError(f"class {chunk.class_name!r}: only {len(selected)} of {chunk.n_jets} jets selected after "
                               f"{max_events} events; the event selection is broken")
        if not pythia.next():
            continue
        event = pythia.event
        truths = _truth_objects(event, chunk.class_name)
        if not truths or not _analyze_quietly(finder, event):
            continue
        for j, p4 in _candidate_jets(finder):
            if _matches(p4, truths):
                selected.append(Jet(p4, _constituents(event, finder.constituents(j))))
                break
    return chunk, _represent(selected, chunk)


def _represent(jets: list[Jet], chunk: _Chunk) -> dict[str, np.ndarray]:
    n = len(jets)
    images = np.empty((n, chunk.image_size, chunk.image_size), dtype=np.float32)
    sequences = np.empty((n, chunk.n_constituents, len(SEQUENCE_FEATURE_NAMES)), dtype=np.float32)
    lengths = np.empty(n, dtype=np.int32)
    for i, jet in enumerate(jets):
        images[i], sequences[i], lengths[i] = image_and_sequence(jet.constituents, jet.p4, chunk.image_size, chunk.n_constituents)
    return {
        "features": hls4ml_features(jets).astype(np.float32),
        "images": images,
        "sequences": sequences,
        "sequence_length": lengths,
        "labels": np.full(n, chunk.class_index, dtype=np.int64),
        "kinematics": np.stack([pt_eta_phi_m(j.p4) for j in jets]).astype(np.float32),
    }


# --------------------------------------------------------------------------------------------
# The file


def generate_jets(out, n_per_class: int, *, seed: int = 1, workers: int = 1, image_size: int = 16, n_constituents: int = 20,
                  progress: bool = True, resume: bool = True) -> Path:
    """Generate ``n_per_class`` jets of each class in CLASSES into the HDF5 file ``out``.

    Returns ``out``. If ``out`` is already a complete file with the same settings it is returned
    as is; if it holds anything else, EdgeannError is raised and it is left alone. Work goes to
    ``<out>.partial`` first; with ``resume`` a partial file from an interrupted run with the same
    settings is continued (one with other settings is discarded, with a warning). On success
    the physics checks are stored in the file and plotted to ``<out stem>_physics.png``.

    ``workers`` > 1 runs chunks in that many processes (started with 'spawn', so a script
    calling this needs the usual ``if __name__ == "__main__":`` guard); the data do not depend
    on it. ``progress`` shows a tqdm bar on stderr.
    """
    settings = _Settings.checked(n_per_class, seed, image_size, n_constituents)
    workers = _int_arg("workers", workers, 1, 1024)
    out = Path(out).expanduser()
    if out.is_dir():
        raise EdgeannError(f"{out} is a directory; give a file name such as {out / 'jets.h5'}")
    plot = out.with_name(out.stem + "_physics.png")
    if out.exists():
        _check_existing(out, settings)
        if not plot.exists():
            plot_physics(out, plot)
        return out
    _check_writable(out.parent)
    with _generation_lock(out):
        if out.exists():  # generated by the process this one waited for
            _check_existing(out, settings)
            return out
        return _generate(out, plot, settings, workers, progress, resume)


@contextlib.contextmanager
def _generation_lock(out: Path):
    """One process generates ``out`` at a time; another one (a second scan worker, a second run) waits for it
    instead of failing on the locked partial file. The lock is released when its holder ends, however it ends."""
    import fcntl

    with open(out.with_name(out.name + ".lock"), "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {out}: another process is generating it", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _generate(out: Path, plot: Path, settings: _Settings, workers: int, progress: bool, resume: bool) -> Path:
    import h5py

    partial = out.with_name(out.name + ".partial")
    f = _open_partial(partial, settings, resume)
    try:
        with tempfile.TemporaryDirectory(prefix="edgeann-jets-") as scratch:
            mpi_init_file = os.path.join(scratch, "mpi.init")
            chunks = _plan(settings, mpi_init_file)
            done = f[_DONE][...] if _DONE in f else np.ones(len(chunks), dtype=bool)
            todo = [c for c in chunks if not done[c.done_slot]]
            n_done = settings.n_total - sum(c.n_jets for c in todo)
            if n_done:
                log.info("resuming %s: %d of %d jets already generated", partial, n_done, settings.n_total)
            _run(todo, workers, f, progress, settings.n_total, n_done, mpi_init_file)
        _finalize(f, workers)
    finally:
        f.close()
    _publish(partial, out)
    plot_physics(out, plot)
    with h5py.File(out, "r") as done_file:
        checks = json.loads(done_file.attrs["physics_checks"])
    if not checks["passed"]:
        failed = [name for name, c in checks["checks"].items() if not c["passed"]]
        log.warning("%s: physics checks failed: %s (small samples can fail by chance; see %s)", out, ", ".join(failed), plot)
    return out


def _publish(partial: Path, out: Path) -> None:
    """Move the finished file to ``out`` in one step, never replacing a file that appeared meanwhile."""
    try:
        os.link(partial, out)  # fails if out exists
    except FileExistsError:
        raise EdgeannError(f"{out} appeared while the jets were generated; the new file is left at {partial}") from None
    except OSError:  # a file system without hard links
        if out.exists():
            raise EdgeannError(f"{out} appeared while the jets were generated; the new file is left at {partial}") from None
        os.replace(partial, out)
    else:
        partial.unlink()


def _check_existing(out: Path, settings: _Settings) -> None:
    import h5py

    try:
        with h5py.File(out, "r") as f:
            complete = bool(f.attrs.get("complete", False))
            stored = json.loads(f.attrs["settings_json"]) if "settings_json" in f.attrs else None
    except OSError:
        complete, stored = False, None
    if stored is None or not complete:
        raise EdgeannError(f"{out} exists and is not a complete edgeann jet file; refusing to overwrite it (move it away first)")
    stored = {k: v for k, v in stored.items() if k != "versions"}
    wanted = settings.content()
    if stored != wanted:
        diff = ", ".join(f"{k}: file has {stored.get(k)!r}, asked for {wanted.get(k)!r}"
                         for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k))
        raise EdgeannError(f"{out} already holds jets made with other settings ({diff}); choose another path or remove it")


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeannError(f"cannot create the output directory {directory}: {e.strerror or e}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise EdgeannError(f"the output directory {directory} is not writable")


def _open_partial(partial: Path, settings: _Settings, resume: bool):
    import h5py

    if partial.exists():
        reason = None
        if not resume:
            reason = "resume=False"
        else:
            try:
                f = h5py.File(partial, "a")
            except OSError as e:
                if "lock" in str(e).lower():
                    raise EdgeannError(f"{partial} is in use by another process (is another generation running?)") from None
                reason = "it cannot be read (interrupted while writing?)"
            else:
                if f.attrs.get("fingerprint") == settings.fingerprint() and _layout_ok(f, settings):
                    return f
                f.close()
                reason = "it was made with other settings or generator versions"
        log.warning("starting %s afresh: %s", partial, reason)
        partial.unlink()
    f = h5py.File(partial, "w")
    try:
        _create_layout(f, settings)
    except BaseException:
        f.close()
        partial.unlink(missing_ok=True)
        raise
    return f


def _layout_ok(f, settings: _Settings) -> bool:
    try:
        return all(f[name].shape[0] == settings.n_total for name in _DATASETS) and (
            _DONE not in f or f[_DONE].shape == (len(CLASSES) * _chunks_per_class(settings),))
    except (KeyError, OSError):
        return False


def _create_layout(f, settings: _Settings) -> None:
    n, s, length = settings.n_total, settings.image_size, settings.n_constituents
    rows = min(n, CHUNK_SIZE)
    packed = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    f.create_dataset("features", (n, len(FEATURE_NAMES)), dtype="f4", chunks=(rows, len(FEATURE_NAMES)))
    f["features"].attrs["names"] = list(FEATURE_NAMES)
    f.create_dataset("images", (n, s, s), dtype="f4", chunks=(rows, s, s), **packed)
    f.create_dataset("sequences", (n, length, len(SEQUENCE_FEATURE_NAMES)), dtype="f4",
                     chunks=(rows, length, len(SEQUENCE_FEATURE_NAMES)), **packed)
    f["sequences"].attrs["names"] = list(SEQUENCE_FEATURE_NAMES)
    f.create_dataset("sequence_length", (n,), dtype="i4")
    f.create_dataset("labels", (n,), dtype="i8")
    f["labels"].attrs["classes"] = list(CLASSES)
    f.create_dataset("kinematics", (n, len(KINEMATIC_NAMES)), dtype="f4")
    f["kinematics"].attrs["names"] = list(KINEMATIC_NAMES)
    f.create_dataset(_DONE, (len(CLASSES) * _chunks_per_class(settings),), dtype=bool)
    versions = _versions()
    content = settings.content()
    f.attrs.update({
        "complete": False,
        "fingerprint": settings.fingerprint(),
        "settings_json": json.dumps({**content, "versions": versions}, sort_keys=True),
        "pythia8mc_version": versions["pythia8mc"],
        "fastjet_version": versions["fastjet"],
        "edgeann_version": versions["edgeann"],
        "seed": settings.seed,
        "n_per_class": settings.n_per_class,
        "image_size": settings.image_size,
        "n_constituents": settings.n_constituents,
        "classes": list(CLASSES),
        "sqrt_s_gev": SQRT_S_GEV,
        "pthat_range_gev": list(PTHAT_RANGE_GEV),
        "jet_pt_window_gev": list(JET_PT_WINDOW_GEV),
        "jet_abs_eta_max": JET_ABS_ETA_MAX,
        "jet_r": JET_R,
        "jet_algorithm": "anti-kt, E-scheme, visible final-state particles",
        "grooming": f"mMDT: soft drop beta={MMDT_BETA}, z_cut={MMDT_ZCUT}",
        "chunk_size": CHUNK_SIZE,
        "row_order": ROW_ORDER,
        "format_version": FORMAT_VERSION,
    })
    f.flush()


def _run(todo: list[_Chunk], workers: int, f, progress: bool, n_total: int, n_done: int, mpi_init_file: str) -> None:
    from tqdm import tqdm

    if not todo:
        return
    with tqdm(total=n_total, initial=n_done, unit="jet", desc="jets", disable=not progress, smoothing=0.1) as bar:
        if workers == 1 or len(todo) == 1:
            _write_mpi_init(mpi_init_file)
            _store_all(map(_generate_chunk, todo), f, bar)
        else:
            import multiprocessing

            # spawn: workers start clean (no copy of this process's HDF5 handle or threads).
            with multiprocessing.get_context("spawn").Pool(min(workers, len(todo)), initializer=_import_generators) as pool:
                _write_mpi_init(mpi_init_file)  # while the workers start
                _store_all(pool.imap_unordered(_generate_chunk, todo), f, bar)


def _import_generators() -> None:
    """Import Pythia and FastJet as a worker starts, while the parent prepares the MPI tables."""
    import fastjet  # noqa: F401
    import pythia8mc  # noqa: F401


def _store_all(results, f, bar) -> None:
    for chunk, arrays in results:
        rows = slice(chunk.row_start, chunk.row_start + chunk.n_jets)
        for name in _DATASETS:
            f[name][rows] = arrays[name]
        f.flush()  # the rows are on disk before the chunk is marked done
        f[_DONE][chunk.done_slot] = True
        f.flush()
        bar.update(chunk.n_jets)


def _finalize(f, workers: int) -> None:
    checks = _physics_checks(f["features"][:, FEATURE_NAMES.index("j_mass_mmdt")], f["features"][:, FEATURE_NAMES.index("j_multiplicity")],
                             f["labels"][...])
    f.attrs["physics_checks"] = json.dumps(checks)
    f.attrs["workers"] = workers
    if _DONE in f:
        del f[_DONE]
    f.attrs["complete"] = True
    f.flush()


# --------------------------------------------------------------------------------------------
# Physics checks and plot


def _read_for_checks(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import h5py

    path = Path(path)
    if not path.is_file():
        raise EdgeannError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            features, labels = f["features"], f["labels"]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in features.attrs["names"]]
            mass = features[:, names.index("j_mass_mmdt")]
            multiplicity = features[:, names.index("j_multiplicity")]
            return mass, multiplicity, labels[...]
    except (OSError, KeyError, ValueError) as e:
        raise EdgeannError(f"{path} is not an edgeann jet file: {e}") from None


def physics_checks(path) -> dict:
    """Per-class median mMDT mass and mean multiplicity, and whether the sample looks physical.

    Checks: median groomed mass of W, Z and top within 10% of 80.4, 91.2 and 173 GeV; median
    groomed mass of quark and gluon jets below 72 GeV (under the W window; gluon jets sit near
    60 GeV after mMDT at 1 TeV); more constituents in gluon than in quark jets on average.
    Returns ``{"classes": {...}, "checks": {name: {"passed": bool, ...}}, "passed": bool}``.
    """
    return _physics_checks(*_read_for_checks(path))


def _physics_checks(mass: np.ndarray, multiplicity: np.ndarray, labels: np.ndarray) -> dict:
    per_class = {}
    for c, name in enumerate(CLASSES):
        sel = labels == c
        per_class[name] = {
            "n_jets": int(sel.sum()),
            "median_mass_mmdt_gev": float(np.median(mass[sel])) if sel.any() else float("nan"),
            "mean_multiplicity": float(np.mean(multiplicity[sel])) if sel.any() else float("nan"),
        }
    checks = {}
    for name, peak in MASS_PEAKS_GEV.items():
        median = per_class[name]["median_mass_mmdt_gev"]
        checks[f"{name}_mass_peak"] = {"passed": bool(abs(median - peak) <= MASS_TOLERANCE * peak), "median_gev": median,
                                       "expected_gev": peak, "tolerance": MASS_TOLERANCE}
    for name in ("q", "g"):
        median = per_class[name]["median_mass_mmdt_gev"]
        checks[f"{name}_light"] = {"passed": bool(median < LIGHT_JET_MAX_MEDIAN_GEV), "median_gev": median,
                                   "max_gev": LIGHT_JET_MAX_MEDIAN_GEV}
    g_mult, q_mult = per_class["g"]["mean_multiplicity"], per_class["q"]["mean_multiplicity"]
    checks["g_more_constituents_than_q"] = {"passed": bool(g_mult > q_mult), "g_mean": g_mult, "q_mean": q_mult}
    return {"classes": per_class, "checks": checks, "passed": all(c["passed"] for c in checks.values())}


def plot_physics(path, png) -> Path:
    """Groomed-mass and multiplicity distributions per class, with the expected peaks, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mass, multiplicity, labels = _read_for_checks(path)
    png = Path(png)
    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_mass, ax_mult = fig.subplots(1, 2)
    colors = dict(zip(CLASSES, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"), strict=True))
    mass_max, mult_max = 300.0, 200.0
    mass_bins = np.linspace(0, mass_max, 61)
    mult_bins = np.linspace(0, mult_max, 41)
    for c, name in enumerate(CLASSES):
        sel = labels == c
        if not sel.any():
            continue
        weights = np.full(sel.sum(), 1.0 / sel.sum())
        ax_mass.hist(np.clip(mass[sel], 0, mass_max - 1e-3), bins=mass_bins, weights=weights, histtype="step", linewidth=1.6,
                     color=colors[name], label=f"{_CLASS_LABELS[name]}: median {np.median(mass[sel]):.1f} GeV")
        ax_mult.hist(np.clip(multiplicity[sel], 0, mult_max - 1e-3), bins=mult_bins, weights=weights, histtype="step", linewidth=1.6,
                     color=colors[name], label=f"{_CLASS_LABELS[name]}: mean {multiplicity[sel].mean():.1f}")
    for name, peak in MASS_PEAKS_GEV.items():
        ax_mass.axvline(peak, color=colors[name], linestyle="--", linewidth=1)
        left = name == "w"  # W and Z labels on either side of their lines
        ax_mass.text(peak - 2 if left else peak + 2, 0.98, f"{_PEAK_LABELS[name]} = {peak:g} GeV", color=colors[name], fontsize=8,
                     va="top", ha="right" if left else "left", transform=ax_mass.get_xaxis_transform())
    ax_mass.set_xlabel(r"mMDT groomed jet mass $m_{\mathrm{mMDT}}$ [GeV]   ($\beta = 0$, $z_{\mathrm{cut}} = 0.1$; last bin: overflow)")
    ax_mass.set_ylabel("Fraction of jets / 5 GeV")
    ax_mass.set_xlim(0, mass_max)
    ax_mass.legend(fontsize=8, loc="center right")
    ax_mult.set_xlabel("Number of constituents (ungroomed jet; last bin: overflow)")
    ax_mult.set_ylabel("Fraction of jets / 5 constituents")
    ax_mult.set_xlim(0, mult_max)
    ax_mult.legend(fontsize=8)
    lo, hi = JET_PT_WINDOW_GEV
    fig.suptitle(rf"Pythia 8, pp $\sqrt{{s}}$ = {SQRT_S_GEV / 1000:g} TeV; anti-$k_T$ R = {JET_R}, {lo:g} < $p_T$ < {hi:g} GeV, "
                 rf"$|\eta| < {JET_ABS_ETA_MAX:g}$; {len(labels) // len(CLASSES)} jets per class ({Path(path).name})", fontsize=10)
    fig.savefig(png, dpi=110)
    return png
