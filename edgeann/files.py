"""Writing files the way a user expects: atomically, and with the permissions their umask gives.

``tempfile.mkstemp`` and ``mkdtemp`` create files 0600 and folders 0700 whatever the umask, so a file
written through them and renamed into place would be unreadable to the user's group (a shared run or
firmware project on a cluster). These helpers create the temporary file honouring the umask instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: no other way exists in POSIX)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends without an error (and is removed otherwise), so
    a crash never leaves half a file; it gets mode ``0o666 & ~umask`` like any file the user creates.
    E.g. ``with atomic_file(p) as fh: torch.save(state, fh)``."""
    path = Path(path)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def make_unique_dir(parent: str | Path, prefix: str) -> Path:
    """A new, uniquely named folder in ``parent`` with mode ``0o777 & ~umask`` (``mkdtemp`` would give 0700)."""
    parent = Path(parent)
    while True:
        candidate = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            candidate.mkdir(0o777)  # the kernel applies the umask
            return candidate
        except FileExistsError:
            continue
