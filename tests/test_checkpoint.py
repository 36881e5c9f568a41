import hashlib
import io
from pathlib import Path
from typing import NamedTuple

import optree
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


# --------------------------------------------------------------------------- refused by our checks, with our words
# Each damage below is one that torch.load alone reads without complaint (checked first), so only the
# project's own check stands between it and a silently wrong state.


def _zip_member_data(payload: bytes, suffix: str) -> int:
    """Offset in a torch.save zip of the first byte of the member whose name ends with ``suffix``."""
    import struct
    import zipfile

    info = next(i for i in zipfile.ZipFile(io.BytesIO(payload)).infolist() if i.filename.endswith(suffix))
    name_len, extra_len = struct.unpack("<HH", payload[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def _payload(raw: bytes) -> bytes:
    return raw[len(checkpoint.MAGIC) + 32 :]


def _rewrite(path, content):
    """A checkpoint file holding ``content`` with a valid header and checksum (as if written by another version)."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    payload = buffer.getvalue()
    path.write_bytes(checkpoint.MAGIC + hashlib.sha256(payload).digest() + payload)


def test_a_flipped_bit_in_a_tensor_is_refused_by_the_checksum(tmp_path):
    path = tmp_path / "c.pt"
    state = make_state()
    checkpoint.save(path, state, {"epoch": 3})
    raw = bytearray(path.read_bytes())
    header = len(checkpoint.MAGIC) + 32
    start = header + _zip_member_data(_payload(bytes(raw)), "data/0")
    raw[start + 2] ^= 0x01  # one bit of one value of the first stored tensor
    path.write_bytes(bytes(raw))
    damaged = torch.load(io.BytesIO(_payload(bytes(raw))), weights_only=True)  # torch reads it: no CRC check
    assert any(
        isinstance(a, torch.Tensor) and not torch.equal(a, b)
        for a, b in zip(damaged["leaves"], optree.tree_leaves(state, none_is_leaf=True), strict=True)
    )
    message = f"{path} is corrupt (checksum mismatch: truncated or modified); refusing to load it"
    for read in (lambda: checkpoint.load(path, make_state()), lambda: checkpoint.read_metadata(path)):
        with pytest.raises(checkpoint.CheckpointError) as caught:
            read()
        assert str(caught.value) == message


def test_a_file_without_our_header_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"leaves": [], "treespec": "", "metadata": {}}, path)  # a plain torch file: torch would read it
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, make_state())
    assert str(caught.value) == f"{path} is not an fgm checkpoint (bad header); refusing to load it"
    path.write_bytes(checkpoint.MAGIC + b"\0" * 31)  # one byte short of a header
    with pytest.raises(checkpoint.CheckpointError, match="bad header"):
        checkpoint.read_metadata(path)


def test_a_valid_checksum_over_an_unreadable_payload_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(checkpoint.MAGIC + hashlib.sha256(b"not a zip").digest() + b"not a zip")
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, make_state())
    assert str(caught.value).startswith(f"{path} could not be read: ")


def test_a_leaf_of_another_dtype_is_refused_naming_it(tmp_path):
    path = tmp_path / "c.pt"
    good = make_state()
    checkpoint.save(path, good._replace(params={**good.params, "w": good.params["w"].double()}))
    torch.load(io.BytesIO(_payload(path.read_bytes())), weights_only=True)  # a readable file
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, make_state())
    assert str(caught.value) == f"{path}: leaf '0.w' is (3, 2) torch.float64, expected (3, 2) torch.float32"


@pytest.mark.parametrize(
    "field, value, got, expected",
    [
        ("count", 7.0, "float", "int"),  # a float where the step counter was an int
        ("count", True, "bool", "int"),
        ("count", torch.tensor(7), "Tensor", "int"),
        ("key", 5, "int", "Key"),
    ],
)
def test_a_leaf_of_another_type_is_refused_naming_it(tmp_path, field, value, got, expected):
    path = tmp_path / "c.pt"
    checkpoint.save(path, make_state()._replace(**{field: value}))
    index = State._fields.index(field)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, make_state())
    assert str(caught.value) == f"{path}: leaf '{index}' is {got}, expected {expected}"


def test_a_non_tensor_where_a_tensor_was_is_refused_naming_it(tmp_path):
    path = tmp_path / "c.pt"
    state = make_state()
    leaves, spec = optree.tree_flatten(state, none_is_leaf=True)
    _rewrite(path, {"leaves": [3, *leaves[1:2], 7, {"__key__": 5}], "treespec": str(spec), "metadata": {}})
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, make_state())
    assert str(caught.value) == f"{path}: leaf '0.b.x' is int, expected (4,) torch.float32"
    leaves[0] = torch.zeros(5)  # a tensor of another shape
    _rewrite(path, {"leaves": [leaves[0], leaves[1], 7, {"__key__": 5}], "treespec": str(spec), "metadata": {}})
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, make_state())
    assert str(caught.value) == f"{path}: leaf '0.b.x' is (5,) torch.float32, expected (4,) torch.float32"


def test_another_structure_is_refused_with_the_leaf_counts(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, make_state())
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, {"params": {"v": torch.zeros(1)}})
    assert str(caught.value) == (
        f"{path}: checkpoint does not match this model's state structure (4 leaves saved, 1 expected). Was it "
        "written by a different model, dataset or configuration?"
    )
    # the same number of leaves in another tree: the structure, not only the count, is compared
    other = {"a": torch.zeros(4), "b": torch.zeros(3, 2), "c": 7, "d": random.key(5)}
    with pytest.raises(checkpoint.CheckpointError, match=r"\(4 leaves saved, 4 expected\)"):
        checkpoint.load(path, other)


def test_loaded_tensors_go_to_the_templates_device_and_keys_stay_keys(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, make_state(), {"config": {"lr": 1e-3}, "epoch": 2})
    template = make_state()
    template = template._replace(params={"w": template.params["w"].to("meta"), "b": template.params["b"]})
    loaded, meta = checkpoint.load(path, template)
    assert loaded.params["w"].device.type == "meta" and loaded.params["b"]["x"].device.type == "cpu"
    assert loaded.key == random.key(5) and isinstance(loaded.key, random.Key) and type(loaded.count) is int
    assert meta == {"config": {"lr": 1e-3}, "epoch": 2} and checkpoint.read_metadata(path) == meta
    checkpoint.save(path, make_state())
    assert checkpoint.read_metadata(path) == {}  # no metadata: an empty dict


def test_a_saved_state_is_detached_and_unchanged(tmp_path):
    state = make_state()
    w = state.params["w"].clone().requires_grad_(True)
    checkpoint.save(tmp_path / "c.pt", state._replace(params={**state.params, "w": w}))
    loaded, _ = checkpoint.load(tmp_path / "c.pt", make_state())
    assert not loaded.params["w"].requires_grad and torch.equal(loaded.params["w"], w.detach())
    assert w.requires_grad  # the caller's tensor untouched


def test_save_creates_missing_folders(tmp_path):
    path = tmp_path / "runs" / "new" / "c.pt"
    checkpoint.save(path, make_state(), {"epoch": 1})
    assert checkpoint.read_metadata(path) == {"epoch": 1}


def test_the_temporary_file_is_beside_the_target_and_named_tmp(tmp_path, monkeypatch):
    """The rename is atomic only within one file system; a leftover after a crash is ``<name>.*.tmp`` (ignored)."""
    moves = []
    original = checkpoint.os.replace

    def replace(src, dst):
        moves.append((Path(src), Path(dst)))
        original(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    path = tmp_path / "c.pt"
    checkpoint.save(path, make_state())
    ((src, dst),) = moves
    assert dst == path and src.parent == path.parent
    assert src.name.startswith("c.pt.") and src.name.endswith(".tmp") and src.name != "c.pt..tmp"


class Payload:
    """Any class outside torch's allow-list: a checkpoint holding one is not a checkpoint of ours."""

    def __reduce__(self):
        return (print, ("a pickle in a checkpoint ran code",))


def test_a_payload_with_arbitrary_objects_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "c.pt"
    _rewrite(path, {"leaves": [], "treespec": "", "metadata": Payload()})
    with pytest.raises(checkpoint.CheckpointError, match=r"could not be read: .*Weights only load failed"):
        checkpoint.read_metadata(path)
    assert "ran code" not in capsys.readouterr().out


def test_a_mismatch_is_named_right_after_none_leaves(tmp_path):
    """``None`` leaves count in the leaf names: the message names the leaf that differs, not its neighbour."""
    state = {"a": None, "b": None, "w": torch.zeros(2), "z": torch.zeros(3)}
    path = tmp_path / "c.pt"
    checkpoint.save(path, {**state, "w": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, state)
    assert str(caught.value) == f"{path}: leaf 'w' is (2,) torch.float64, expected (2,) torch.float32"
    checkpoint.save(tmp_path / "ok.pt", state)
    loaded, _ = checkpoint.load(tmp_path / "ok.pt", state)
    assert loaded["a"] is None and loaded["b"] is None and torch.equal(loaded["z"], state["z"])
