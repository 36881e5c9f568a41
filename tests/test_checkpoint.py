from typing import NamedTuple

import pytest
import torch

from fgm import checkpoint, random
from fgm.tree import tree_equal


class State(NamedTuple):
    params: dict
    count: int
    key: random.Key


def make_state(width=3):
    g = torch.Generator().manual_seed(0)
    return State({"w": torch.randn(width, 2, generator=g), "b": {"x": torch.arange(4.0)}}, 7, random.key(5))


def test_round_trip(tmp_path):
    state = make_state()
    checkpoint.save(tmp_path / "c.pt", state, {"epoch": 3})
    loaded, meta = checkpoint.load(tmp_path / "c.pt", make_state())
    assert tree_equal(loaded, state) and loaded.key == state.key and meta == {"epoch": 3}
    assert isinstance(loaded, State)


def test_atomic_write_leaves_no_temp_files_and_keeps_old_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    checkpoint.save(path, make_state(), {"epoch": 1})
    original = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", boom)
    with pytest.raises(OSError):
        checkpoint.save(path, make_state(), {"epoch": 2})
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_corrupt_checkpoint_is_refused(tmp_path, damage):
    path = tmp_path / "c.pt"
    checkpoint.save(path, make_state())
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[-100] ^= 0xFF
    elif damage == "header":
        raw[:4] = b"XXXX"
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.CheckpointError, match="corrupt|not an fgm checkpoint"):
        checkpoint.load(path, make_state())


def test_mismatched_checkpoint_names_the_leaf(tmp_path):
    checkpoint.save(tmp_path / "c.pt", make_state(width=3))
    with pytest.raises(checkpoint.CheckpointError, match="w"):
        checkpoint.load(tmp_path / "c.pt", make_state(width=5))
    other = {"params": {"v": torch.zeros(1)}}
    with pytest.raises(checkpoint.CheckpointError, match="structure"):
        checkpoint.load(tmp_path / "c.pt", other)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nope.pt", make_state())
