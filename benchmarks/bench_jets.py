"""Throughput of the Pythia 8 + FastJet jet generator, in jets per second (all three representations).

    python benchmarks/bench_jets.py --n-per-class 100 --workers 2

Runs ``generate_jets`` end to end into a temporary file (process start-up, Pythia
initialization, HDF5 writing included) and prints one line with the total rate, then the time
one chunk of each class takes in this process (single core), which shows which class dominates.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-class-jets", type=int, default=50, help="jets per class for the single-core breakdown (0: skip)")
    args = parser.parse_args(argv)

    from edgeann.data import jets

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-jets-") as tmp:
        out = Path(tmp) / "jets.h5"
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        jets.generate_jets(out, args.n_per_class, seed=args.seed, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        size_mb = out.stat().st_size / 1e6
    n_total = args.n_per_class * len(jets.CLASSES)
    print(f"bench_jets: {n_total} jets ({args.n_per_class}/class) with {args.workers} worker(s) in {wall:.1f} s = "
          f"{n_total / wall:.1f} jets/s; {1e3 * cpu / n_total:.0f} ms CPU per jet (all processes, start-up included); "
          f"file {size_mb:.1f} MB; {os.cpu_count()} CPUs, load average {load_before:.1f} before the run")

    if args.per_class_jets > 0:
        print(f"per class, one chunk of {args.per_class_jets} jets in this process (Pythia init included):")
        with tempfile.TemporaryDirectory(prefix="bench-jets-") as tmp:
            mpi_init = os.path.join(tmp, "mpi.init")
            jets._write_mpi_init(mpi_init)
            settings = jets._Settings.checked(args.per_class_jets, args.seed, 16, 20)
            for chunk in jets._plan(settings, mpi_init)[: len(jets.CLASSES)]:
                t0 = time.perf_counter()
                jets._generate_chunk(chunk)
                dt = time.perf_counter() - t0
                print(f"  {chunk.class_name}: {dt:6.2f} s  {chunk.n_jets / dt:6.1f} jets/s")


def _cpu_seconds() -> float:
    """User + system time of this process and of its finished children (the pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
