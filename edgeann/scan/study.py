"""The scan's study: an Optuna multi-objective study kept in a journal file inside the scan folder (no server).

Whoever runs trials (local worker processes, or the Ray driver in :mod:`edgeann.scan.ray_backend`) goes
through the same three steps, under the scan's file lock so that concurrent processes agree:

1. :func:`fail_stale_trials`: a RUNNING trial whose process is gone (SIGKILL, a crashed node) is marked
   FAIL and its parameters queued again, so it is re-run and never counted twice;
2. :func:`next_trial`: ask Optuna for a trial only while completed + running trials are fewer than the
   study's total (``--trials`` counts completed trials of the whole study, not per worker);
3. :func:`run_trial`, then :func:`record`: the objective is ``edgeann train`` on the flow with the trial's
   values (:func:`edgeann.pipeline.train_run`), measured from its metrics.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeann.scan.space import Space

SCAN_FILE = "scan.json"
FLOW_FILE = "flow.yaml"
JOURNAL = "journal.log"
LOCK = ".scan.lock"
TRIALS = "trials"
HEARTBEATS = ".heartbeats"
STUDY_NAME = "edgeann-scan"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0  # a trial on another host whose heartbeat is older than this is given up


@dataclass(frozen=True)
class Scan:
    """A scan folder and what it was started with (``scan.json``): the user's flow and ``--set`` texts (shown in
    rebuild commands) and the space."""

    folder: Path
    flow: Path
    overrides: tuple[str, ...]
    space: Space

    @classmethod
    def load(cls, folder: str | Path) -> Scan:
        folder = Path(folder)
        meta = json.loads((folder / SCAN_FILE).read_text())
        return cls(folder, Path(meta["flow_path"]), tuple(meta["overrides"]), Space.model_validate(meta["space"]))

    @property
    def flow_file(self) -> Path:
        """The flow every trial starts from: the user's flow with the command's ``--set`` applied, saved in the
        folder when the scan began (a resumed scan, or a Ray task on another node, needs nothing else)."""
        return self.folder / FLOW_FILE

    def run_dir(self, number: int) -> Path:
        return self.folder / TRIALS / f"trial_{number:04d}"

    def storage(self):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(self.folder / JOURNAL)))

    def study(self, sampler_seed: int | None = None):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=STUDY_NAME, storage=self.storage(), sampler=self.sampler(sampler_seed))

    def create_study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(study_name=STUDY_NAME, storage=self.storage(), load_if_exists=True,
                                   directions=[o.direction for o in self.space.objectives])

    def sampler(self, seed: int | None):
        import optuna

        # constraints reach the samplers through trial.set_constraint (see record), Optuna 5's replacement of
        # constraints_func
        if self.space.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if self.space.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    @contextlib.contextmanager
    def lock(self):
        """Exclusive among every process of this scan on this file system; released if the holder dies."""
        with open(self.folder / LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def sampler_seed(space: Space, worker: int, n_trials_before: int) -> int:
    """Each worker draws its own numbers, and a resumed scan does not repeat the draws it started with; one
    worker on the same space and history always draws the same ones."""
    return (space.seed * 1_000_003 + worker * 7919 + n_trials_before) % 2**31


# ---------------------------------------------------------------------------------------------
# who is alive


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Heartbeat:
    """Touches ``.heartbeats/<trial number>`` every few seconds for the trials this process is running, so that
    a process on another host can tell a live trial from one whose process died."""

    def __init__(self, scan: Scan):
        self.dir = scan.folder / HEARTBEATS
        self.dir.mkdir(exist_ok=True)
        self.numbers: set[int] = set()
        self._stop = threading.Event()
        # a beat and a remove never interleave: a touch after the unlink would leave the file of a finished trial
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def add(self, number: int) -> None:
        """The file holds the pid of the process running the trial."""
        with self._lock:
            self.numbers.add(number)
            (self.dir / str(number)).write_text(f"{os.getpid()}\n")

    def remove(self, number: int) -> None:
        with self._lock:
            self.numbers.discard(number)
            (self.dir / str(number)).unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                for n in self.numbers:
                    with contextlib.suppress(OSError):
                        (self.dir / str(n)).touch()

    def stop(self) -> None:
        self._stop.set()


def _stale_reason(scan: Scan, trial, now: float) -> str | None:
    pid, host = trial.user_attrs.get("pid"), trial.user_attrs.get("host")
    if pid is not None and host == socket.gethostname() and _process_gone(pid):
        return f"its process {pid} is gone"
    beat = scan.folder / HEARTBEATS / str(trial.number)
    last = beat.stat().st_mtime if beat.exists() else trial.datetime_start.timestamp()
    if now - last > STALE_AFTER_S:
        return f"no heartbeat for {now - last:.0f} s"
    return None


def fail_stale_trials(scan: Scan, study) -> list[int]:
    """Mark the RUNNING trials whose process died FAIL and queue their parameters again (call under the lock)."""
    from optuna.trial import TrialState

    now, failed = time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(scan, trial, now)
        if reason is None:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "error", f"abandoned: {reason}")
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        shutil.rmtree(scan.run_dir(trial.number), ignore_errors=True)
        (scan.folder / HEARTBEATS / str(trial.number)).unlink(missing_ok=True)
        failed.append(trial.number)
    return failed


# ---------------------------------------------------------------------------------------------
# asking, running, telling


@dataclass
class Counts:
    complete: int
    running: int
    failed: int  # failed by an error in the trial itself (not abandoned ones)
    last_error: str | None


def counts(study) -> Counts:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    errors = [t for t in trials if t.state == TrialState.FAIL and not str(t.user_attrs.get("error", "")).startswith("abandoned")]
    return Counts(sum(t.state == TrialState.COMPLETE for t in trials), sum(t.state == TrialState.RUNNING for t in trials),
                  len(errors), errors[-1].user_attrs.get("error") if errors else None)


def too_many_failures(c: Counts, total: int) -> str | None:
    if c.failed > max(2, total // 2):
        return f"{c.failed} trials failed (the last: {c.last_error}); see trials.csv"
    return None


def next_trial(scan: Scan, study, total: int) -> tuple[Any, dict] | None:
    """A new trial and its values by key path, or None while completed + running trials reach ``total``
    (call under the lock)."""
    fail_stale_trials(scan, study)
    c = counts(study)
    if c.complete + c.running >= total or too_many_failures(c, total):
        return None
    trial = study.ask()
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("host", socket.gethostname())
    return trial, scan.space.suggest(trial)


def run_trial(folder: str, number: int, values: dict, threads: int | None = None) -> dict:
    """The objective: train the flow with the trial's values into its run folder; returns what :func:`record`
    stores. Runs in a worker process or a Ray task (a plain function of picklable arguments)."""
    from edgeann.config import load_flow
    from edgeann.pipeline import train_run
    from edgeann.scan.costs import measure
    from edgeann.scan.space import overrides

    if threads:
        import torch

        torch.set_num_threads(threads)
    scan = Scan.load(folder)
    cfg = load_flow(scan.flow_file, overrides(values))
    run_dir = scan.run_dir(number)
    t0 = time.perf_counter()
    train_run(cfg, run_dir, force=True, progress=False)
    seconds = time.perf_counter() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    measured = measure(run_dir, metrics, scan.space.costs())
    return {"measured": measured, "onnx_exact": bool(metrics.get("onnx_exact", False)), "seconds": round(seconds, 2),
            "run_dir": str(run_dir.relative_to(scan.folder))}


def record(scan: Scan, study, trial, outcome: dict | None, error: str | None = None) -> None:
    """Tell the study how a trial ended: its objective values and, as user attributes, everything trials.csv
    shows; constraint values <= 0 mean met (Optuna's convention)."""
    from optuna.trial import TrialState

    if outcome is None:
        trial.set_user_attr("error", error or "unknown error")
        study.tell(trial, state=TrialState.FAIL)
        return
    measured = outcome["measured"]
    for key, value in outcome.items():
        trial.set_user_attr(key, value)
    violations = [c.violation(measured) for c in scan.space.parsed_constraints()]
    trial.set_user_attr("constraints", violations)
    for constraint, violation in zip(scan.space.constraints, violations):
        trial.set_constraint(constraint, violation)
    study.tell(trial, [measured[o.name] for o in scan.space.objectives])


def describe_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


# ---------------------------------------------------------------------------------------------
# a local worker process


def work(folder: str, total: int, worker: int, threads: int | None) -> None:
    """One local worker: trials until the study has ``total`` completed ones (waiting for its peers' trials, and
    taking over those of a peer that died)."""
    import warnings

    warnings.filterwarnings("ignore")
    from edgeann import pipeline  # noqa: F401  (torch and Brevitas load before the first trial, not inside it)

    scan = Scan.load(folder)
    with scan.lock():
        n_before = len(scan.storage().get_all_trials(_study_id(scan)))
    study = scan.study(sampler_seed(scan.space, worker, n_before))
    heartbeat = Heartbeat(scan)
    try:
        while True:
            with scan.lock():
                nxt = next_trial(scan, study, total)
                c = counts(study)
            if nxt is None:
                if c.complete >= total or too_many_failures(c, total):
                    return
                time.sleep(1.0)  # peers are running the last trials: wait in case one of them dies
                continue
            trial, values = nxt
            heartbeat.add(trial.number)
            try:
                outcome, error = run_trial(folder, trial.number, values, threads), None
            except Exception as e:  # a trial's own failure is the trial's result, not the worker's end
                outcome, error = None, describe_error(e)
            with scan.lock():
                record(scan, study, trial, outcome, error)
            heartbeat.remove(trial.number)
    finally:
        heartbeat.stop()


def _study_id(scan: Scan) -> int:
    return scan.storage().get_study_id_from_name(STUDY_NAME)

