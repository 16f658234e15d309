"""``edgeann scan``: check everything, prepare the data once, then run trials locally or on Ray until the study
has the asked number of completed trials, and write the scan's outputs."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from edgeann.errors import EdgeannError
from edgeann.files import atomic_write
from edgeann.scan import study as st
from edgeann.scan.space import Space, check_against_flow, check_layer_names, load_space


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_scan_dir(space_path: Path) -> Path:
    return Path("scans") / Path(space_path).stem


def run_scan(flow, space_path, trials: int, workers: int = 1, out=None, overrides=(), ray: str | None = None,
             num_cpus: float = 1.0, num_gpus: float = 0.0, progress: bool = True, command: str = "",
             echo=print) -> dict:
    """Run (or continue) the scan of ``flow`` over the space file ``space_path`` until its study holds
    ``trials`` completed trials; returns what :func:`edgeann.scan.outputs.write_outputs` returns plus
    ``folder``. ``ray``: None runs ``workers`` local processes; ``"local"`` a local Ray instance, any other
    text the address of a running Ray cluster (``workers`` trials at a time, ``num_cpus`` / ``num_gpus`` each).

    Nothing is written before the space has been checked against the flow schema, and a folder holding another
    study is refused untouched."""
    from edgeann.config import load_flow, resolve_flow_path

    if trials < 1:
        raise EdgeannError(f"--trials {trials}: give at least 1 (the total of completed trials of the study)")
    if workers < 1:
        raise EdgeannError(f"--workers {workers}: give at least 1")
    if ray is None or ray == "local":
        if workers > available_cores():
            raise EdgeannError(f"--workers {workers} is more than the {available_cores()} cores of this machine")
    space_path = Path(space_path)
    space = load_space(space_path)
    overrides = list(overrides)
    cfg = load_flow(flow, overrides)
    flow_path = resolve_flow_path(flow).resolve()
    check_against_flow(space, flow, overrides, space_path)
    folder = Path(out) if out is not None else default_scan_dir(space_path)
    _check_folder(folder, cfg, space)
    if ray is not None:
        from edgeann.scan.ray_backend import connect

        ray_info = connect(ray)  # an unreachable cluster or a missing Ray ends here, before any file is written
    if ray is None and workers > 1:
        start_worker_server()
    from edgeann import data, pipeline  # noqa: F401  (imported once here, not inside the first trial's time)

    echo(f"preparing the data of {cfg.name} once for every trial")
    splits = data.prepare(cfg.data, cfg.seed)
    check_layer_names(space, flow, overrides, splits.sample_shape, len(splits.classes), space_path)
    scan = _open_scan(folder, flow_path, overrides, cfg, space, space_path)
    study = scan.create_study()
    with scan.lock():
        stale = st.fail_stale_trials(scan, study)
    c = st.counts(study)
    if stale:
        echo(f"trial(s) {', '.join(map(str, stale))} of an interrupted run were abandoned: marked failed, to be re-run")
    echo(f"{folder}: {c.complete} of {trials} trials completed so far"
         + (f"; running on Ray ({ray_info})" if ray is not None else f"; {workers} worker(s)"))
    bar = _ProgressBar(scan, trials, progress)
    try:
        if ray is not None:
            from edgeann.scan.ray_backend import drive

            drive(scan, trials, workers, num_cpus, num_gpus)
        else:
            _run_local(scan, trials, workers, echo)
    finally:
        bar.close()
    from edgeann.scan.outputs import write_outputs

    study = scan.study()
    result = write_outputs(scan, study, command)
    c = st.counts(study)
    failure = st.too_many_failures(c, trials)
    if failure:
        raise EdgeannError(f"stopped: {failure}")
    if c.complete < trials:
        raise EdgeannError(f"{folder}: only {c.complete} of {trials} trials completed (workers ended early); run the "
                           "same command again to continue")
    return {**result, "folder": folder}


def _check_folder(folder: Path, cfg, space: Space) -> None:
    if (folder / st.SCAN_FILE).is_file():
        try:
            meta = json.loads((folder / st.SCAN_FILE).read_text())
            saved_flow, saved_space = meta["flow"], meta["space"]
        except (OSError, ValueError, KeyError):
            raise EdgeannError(f"{folder / st.SCAN_FILE} is unreadable; choose another --out") from None
        now_flow = cfg.model_dump(mode="json")
        if saved_flow != now_flow:
            changed = sorted(k for k in set(saved_flow) | set(now_flow) if saved_flow.get(k) != now_flow.get(k))
            raise EdgeannError(f"{folder} holds another study: its flow differs in {', '.join(changed)}; choose another "
                               "--out (or run the scan's own flow and --set again to continue it)")
        if saved_space != space.model_dump(mode="json"):
            raise EdgeannError(f"{folder} holds another study: its space differs from this space file; choose "
                               "another --out")
    elif folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise EdgeannError(f"{folder} exists and is not a scan folder ({st.SCAN_FILE} missing); choose another --out")


def _open_scan(folder: Path, flow_path: Path, overrides: list[str], cfg, space: Space, space_path: Path) -> st.Scan:
    if not (folder / st.SCAN_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / st.FLOW_FILE, cfg.to_yaml())
        atomic_write(folder / st.SCAN_FILE, json.dumps({
            "flow_path": str(flow_path), "overrides": overrides, "space_file": str(space_path),
            "flow": cfg.model_dump(mode="json"), "space": space.model_dump(mode="json")}, indent=2) + "\n")
    return st.Scan.load(folder)


def _run_local(scan: st.Scan, trials: int, workers: int, echo) -> None:
    """``workers`` workers sharing the study, torch threads per worker = cores / workers. This process, whose
    torch and Brevitas are loaded already, is worker 0 and starts training at once; the others are processes
    forked from a server that loaded them once (see :func:`start_worker_server`), started as the scan began."""
    threads = max(1, available_cores() // workers)
    if workers == 1:
        st.work(str(scan.folder), trials, 0, threads)
        return
    ctx = _worker_context()
    procs = [ctx.Process(target=_worker, args=(str(scan.folder), trials, i, threads), name=f"edgeann-scan-{i}")
             for i in range(1, workers)]
    # started from another thread: a start waits for the fork server to finish importing, this process need not
    watcher = threading.Thread(target=_start_and_watch, args=(procs, scan.folder / "workers.json", echo), daemon=True)
    watcher.start()
    try:
        st.work(str(scan.folder), trials, 0, threads)
        watcher.join()
    except BaseException:
        for p in procs:
            if p.pid is not None:
                p.terminate()
        raise


def _start_and_watch(procs, pid_file: Path, echo) -> None:
    """Start the worker processes and wait for them (the one place that polls them); say when one ends
    abnormally (its trial is re-run by the others)."""
    for p in procs:
        p.start()
    pid_file.write_text(json.dumps([p.pid for p in procs]) + "\n")
    reported = set()
    while True:
        ended = [p for p in procs if p.exitcode is not None]
        for p in ended:
            if p.exitcode != 0 and p.pid not in reported:
                reported.add(p.pid)
                how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"status {p.exitcode}"
                echo(f"worker {p.name} (pid {p.pid}) ended with {how}; its trial is re-run by the other workers")
        if len(ended) == len(procs):
            return
        time.sleep(0.3)


_PRELOAD = ["edgeann.scan.study", "edgeann.pipeline"]


def _worker_context():
    # not "fork": a forked torch would inherit this process's thread pools. A fork server is a fresh process
    # that only imports (no thread pool exists yet), so forks of it are safe and start in milliseconds.
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def start_worker_server() -> None:
    """Start the fork server of the local workers now, so that its one import of torch and Brevitas runs
    while this process checks the space and prepares the data."""
    from multiprocessing import forkserver

    _worker_context()
    forkserver.ensure_running()


def _worker(folder: str, trials: int, worker: int, threads: int) -> None:
    _end_with_parent()
    st.work(folder, trials, worker, threads)


def _end_with_parent() -> None:
    """A worker ends when the scan that started it ends or is killed, instead of training on unattended; its trial
    is then re-run by the next scan. The scan is not the worker's parent process (the fork server is, and lives as
    long as any worker), so the worker watches the pipe multiprocessing keeps from the scan: it reads end-of-file
    when the scan is gone."""
    import multiprocessing
    import signal
    from multiprocessing.connection import wait

    scan = multiprocessing.parent_process()
    if scan is None:
        return

    def watch():
        wait([scan.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="end-with-scan", daemon=True).start()


class _ProgressBar:
    """One bar over the study's completed trials, with the Pareto front's size, refreshed from the journal."""

    def __init__(self, scan: st.Scan, total: int, enabled: bool):
        self.scan, self.total, self._stop = scan, total, threading.Event()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="scan", unit="trial", dynamic_ncols=True)
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def _refresh(self, study) -> None:
        from edgeann.scan.outputs import pareto_front, trial_rows

        rows = trial_rows(self.scan, study)
        self.bar.n = min(self.total, sum(r["state"] == "COMPLETE" for r in rows))
        self.bar.set_postfix(pareto=len(pareto_front(self.scan, rows)),
                             running=sum(r["state"] == "RUNNING" for r in rows), refresh=False)
        self.bar.refresh()

    def _poll(self) -> None:
        study = self.scan.study()
        while not self._stop.wait(1.0):
            try:
                self._refresh(study)
            except Exception:  # a display problem must never stop the scan
                pass

    def close(self) -> None:
        if self.bar is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            try:
                self._refresh(self.scan.study())
            except Exception:
                pass
            self.bar.close()


def trial_run_dir(scan_folder: str | Path, trial: int) -> Path:
    """The run folder of trial ``trial`` of a scan (for ``edgeann export SCAN --trial N``)."""
    folder = Path(scan_folder)
    if not (folder / st.SCAN_FILE).is_file():
        raise EdgeannError(f"{folder} is not a scan folder ({st.SCAN_FILE} missing); --trial needs one")
    scan = st.Scan.load(folder)
    from optuna.trial import TrialState

    study = scan.study()
    done = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if trial not in done:
        raise EdgeannError(f"{folder} has no completed trial {trial} (completed: "
                           f"{', '.join(map(str, sorted(done))) or 'none'})")
    return folder / done[trial].user_attrs["run_dir"]


def default_trial_project(scan_folder: str | Path, trial: int) -> Path:
    return Path("hls_projects") / f"{Path(scan_folder).resolve().name}-trial{trial}"

