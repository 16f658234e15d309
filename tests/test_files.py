"""Files are written atomically and with the permissions the user's umask gives."""

import json
import os

import pytest
import torch

from edgeann.files import atomic_write, current_umask, make_unique_dir
from edgeann.pipeline import write_json
from edgeann.train import save_checkpoint


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_write_honours_the_umask(tmp_path, umask):
    assert current_umask() == umask
    atomic_write(tmp_path / "a.txt", "text")
    write_json(tmp_path / "b.json", {"k": 1})
    save_checkpoint(tmp_path / "c.pt", {"format": 2, "model": {}})
    assert (tmp_path / "a.txt").read_text() == "text" and json.loads((tmp_path / "b.json").read_text()) == {"k": 1}
    assert torch.load(tmp_path / "c.pt", weights_only=True) == {"format": 2, "model": {}}
    for name in ("a.txt", "b.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    folder = make_unique_dir(tmp_path, ".staging-")
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.txt", "b.json", "c.pt", folder.name])  # no temporary left


def test_atomic_write_replaces_and_cleans_up_on_error(tmp_path):
    atomic_write(tmp_path / "a", b"old")
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "a", 12345)
    assert (tmp_path / "a").read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a"]
    atomic_write(tmp_path / "a", b"new")
    assert (tmp_path / "a").read_bytes() == b"new"


def test_atomic_file_streams_and_removes_its_temporary_on_error(tmp_path):
    from edgeann.files import atomic_file

    with atomic_file(tmp_path / "c") as fh:
        fh.write(b"streamed")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "c") as fh:
        fh.write(b"half")
        raise RuntimeError("crash")
    assert (tmp_path / "c").read_bytes() == b"streamed" and [p.name for p in tmp_path.iterdir()] == ["c"]
