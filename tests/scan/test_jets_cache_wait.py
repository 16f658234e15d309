"""Scan workers (or any two runs) that need the same jets cache: the second waits for the first, never fails."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys

from edgeann.data.jets import generate_jets

from .test_scan import scan_env


def test_a_second_process_waits_for_the_jets_another_one_generates(tmp_path):
    made = generate_jets(tmp_path / "made" / "jets.h5", 4, seed=5, workers=1, progress=False)
    out = tmp_path / "cache" / "jets.h5"
    out.parent.mkdir()
    with open(out.with_name(out.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # this test plays the process generating the file
        waiter = subprocess.Popen(
            [sys.executable, "-c", f"from edgeann.data.jets import generate_jets; "
                                   f"print(generate_jets({str(out)!r}, 4, seed=5, progress=False))"],
            env=scan_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiter.stderr.readline().strip() == f"waiting for {out}: another process is generating it"
        assert waiter.poll() is None
        shutil.copyfile(made, out)  # ... and finishes it
        fcntl.flock(lock, fcntl.LOCK_UN)
    stdout, stderr = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, stderr
    assert stdout.strip() == str(out)
    assert out.read_bytes() == made.read_bytes()  # taken as it is, not generated again
    assert not out.with_name(out.name + ".partial").exists()
