"""Trials as Ray tasks: the same objective (:func:`edgeann.scan.study.run_trial`), on a local Ray instance or a
running cluster, with the study kept by the driver.

Why Optuna's ask/tell around Ray tasks (and not Optuna inside each task): the driver is the only process that
talks to the journal, so the study file needs no shared lock across nodes and the tasks need no access to it;
a task is a plain function of (scan folder, trial number, values) that returns its measurements, so Ray can
retry or place it anywhere with ``num_cpus`` / ``num_gpus``; and the sampler sees every result in one process,
as with one local worker. The run folders are written by the tasks: on a cluster the scan folder must be on a
file system every node sees (the usual home or project space of a Slurm cluster).
"""

from __future__ import annotations

import os
import socket
import time

from edgeann.errors import EdgeannError
from edgeann.scan import study as st

INSTALL_HINT = "Ray is not installed; install it with: pip install -e '.[ray]' (or pip install 'ray>=2.30')"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EdgeannError(INSTALL_HINT) from None
    return ray


def connect(address: str) -> str:
    """Start (``"local"``) or join (an address; ``RAY_ADDRESS`` is Ray's own fallback) Ray; returns a
    description. An address nobody answers on ends in one line, quickly."""
    ray = _import_ray()
    if ray.is_initialized():
        return "already connected"
    if address == "local" and not os.environ.get("RAY_ADDRESS"):
        from edgeann.scan.run import available_cores

        ray.init(num_cpus=available_cores(), include_dashboard=False, log_to_driver=False,
                 logging_level="error", configure_logging=False)
        return f"a local Ray instance, {available_cores()} CPUs"
    address = os.environ["RAY_ADDRESS"] if address == "local" else address
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="error", configure_logging=False)
    except Exception as e:
        raise EdgeannError(f"cannot join the Ray cluster at {address}: {st.describe_error(e)}") from None
    resources = ray.cluster_resources()
    return f"the cluster at {address}, {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"


def _check_reachable(address: str) -> None:
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EdgeannError(f"--ray {address}: expected HOST:PORT (the head node's GCS address, e.g. 10.0.0.1:6379), "
                           "ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise EdgeannError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with "
                           "`ray start --head` (see the README) or check the address") from None


def _trial_task(folder: str, number: int, values: dict, threads: int) -> dict:
    """:func:`edgeann.scan.study.run_trial` as a Ray task, recording the node it ran on."""
    import ray

    return {**st.run_trial(folder, number, values, threads), "ray_node": ray.get_runtime_context().get_node_id()}


def drive(scan: st.Scan, total: int, concurrency: int, num_cpus: float, num_gpus: float) -> None:
    """Keep up to ``concurrency`` trials running as Ray tasks until the study has ``total`` completed trials."""
    ray = _import_ray()
    threads = max(1, int(num_cpus))
    task = ray.remote(_trial_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)
    with scan.lock():
        n_before = len(scan.study().get_trials(deepcopy=False))
    study = scan.study(st.sampler_seed(scan.space, 0, n_before))
    heartbeat = st.Heartbeat(scan)
    running: dict = {}
    try:
        while True:
            with scan.lock():
                while len(running) < concurrency:
                    nxt = st.next_trial(scan, study, total)
                    if nxt is None:
                        break
                    trial, values = nxt
                    heartbeat.add(trial.number)
                    running[task.remote(str(scan.folder.resolve()), trial.number, values, threads)] = trial
                c = st.counts(study)
            if not running:
                if c.complete >= total or st.too_many_failures(c, total):
                    return
                time.sleep(1.0)  # another driver or local worker runs the last trials
                continue
            done, _ = ray.wait(list(running), num_returns=1, timeout=5.0)
            for ref in done:
                trial = running.pop(ref)
                try:
                    outcome, error = ray.get(ref), None
                except Exception as e:  # the task's failure (or its worker's death) is the trial's result
                    cause = getattr(e, "cause", None)
                    outcome, error = None, st.describe_error(cause if isinstance(cause, BaseException) else e)
                with scan.lock():
                    st.record(scan, study, trial, outcome, error)
                heartbeat.remove(trial.number)
    finally:
        heartbeat.stop()
        for ref in running:
            ray.cancel(ref, force=True)
