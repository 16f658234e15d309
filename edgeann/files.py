"""Writing files the way a user expects: atomically, and with the permissions their umask gives.

``tempfile.mkstemp`` and ``mkdtemp`` create files 0600 and folders 0700 whatever the umask, so a file
written through them and renamed into place would be unreadable to the user's group (a shared run or
firmware project on a cluster). These helpers create the temporary file honouring the umask instead.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: no other way exists in POSIX)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename, so a crash never leaves half a
    file; the file gets mode ``0o666 & ~umask`` like any file the user creates."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
