"""Atomic, verified checkpoints of arbitrary state pytrees.

A checkpoint stores the *leaves* of a state tree plus metadata, never pickled
classes: loading needs a *template* (a freshly initialised state of the same
model), whose structure is used to rebuild the tree. This makes a mismatched
checkpoint (another model, another width) fail loudly, leaf by leaf, instead
of loading garbage.

File layout: ``MAGIC | sha256(payload) | payload`` where ``payload`` is a
``torch.save`` of ``{"leaves": [...], "metadata": {...}}``. Writes go to a
temporary file in the same directory, are fsynced, then ``os.replace``-d over
the target, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import optree
import torch

from fgm import random
from fgm.tree import TensorTree

__all__ = ["CheckpointError", "load", "read_metadata", "save"]

MAGIC = b"FGMCKPT1"
_DIGEST = 32


class CheckpointError(Exception):
    """A checkpoint is missing, corrupt, or does not match the model."""


def _encode(leaf: Any) -> Any:
    if isinstance(leaf, random.Key):
        return {"__key__": leaf.value}
    return leaf


def _decode(leaf: Any) -> Any:
    if isinstance(leaf, dict) and "__key__" in leaf:
        return random.Key(int(leaf["__key__"]))
    return leaf


def save(path: str | os.PathLike, state: TensorTree, metadata: dict | None = None) -> None:
    """Writes ``state`` (any pytree of tensors, ints, floats and keys) atomically.

    Args:
      path: destination file.
      state: the tree to save (e.g. a :class:`fgm.train.TrainState`).
      metadata: JSON-like dict stored beside it (config, epoch, ...).

    Returns:
      None. The file is replaced atomically: after a crash it holds either the
      previous checkpoint or this one, never a mix.
    """
    path = Path(path)
    leaves, spec = optree.tree_flatten(state, none_is_leaf=True)
    buffer = io.BytesIO()
    torch.save(
        {
            "leaves": [_encode(x.detach().cpu() if isinstance(x, torch.Tensor) else x) for x in leaves],
            "treespec": str(spec),
            "metadata": metadata or {},
        },
        buffer,
    )
    payload = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(hashlib.sha256(payload).digest())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint (verifies integrity first).

    Args:
      path: the file written by :func:`save`.

    Returns:
      The ``metadata`` dict passed to :func:`save`.

    Raises:
      CheckpointError: missing or corrupt file.
    """
    return _read(Path(path))["metadata"]


def load(path: str | os.PathLike, template: TensorTree) -> tuple[TensorTree, dict]:
    """Loads a checkpoint into the structure of ``template``.

    Args:
      path: the file written by :func:`save`.
      template: a tree with the expected structure, shapes and dtypes; each
        loaded tensor is placed on the device of its template leaf, whatever
        device saved it.

    Returns:
      ``(state, metadata)``.

    Raises:
      CheckpointError: missing or corrupt file, or a structure, shape or
        dtype that differs from ``template`` (the message names the leaf).
    """
    path = Path(path)
    content = _read(path)
    t_leaves, t_spec = optree.tree_flatten(template, none_is_leaf=True)
    leaves = [_decode(x) for x in content["leaves"]]
    if content["treespec"] != str(t_spec) or len(leaves) != len(t_leaves):
        raise CheckpointError(
            f"{path}: checkpoint does not match this model's state structure "
            f"({len(leaves)} leaves saved, {len(t_leaves)} expected). Was it written "
            "by a different model, dataset or configuration?"
        )
    names = [".".join(map(str, p)) for p in optree.tree_paths(template, none_is_leaf=True)]
    for name, saved, expected in zip(names, leaves, t_leaves, strict=True):
        if isinstance(expected, torch.Tensor):
            if not isinstance(saved, torch.Tensor) or saved.shape != expected.shape or saved.dtype != expected.dtype:
                got = f"{tuple(saved.shape)} {saved.dtype}" if isinstance(saved, torch.Tensor) else type(saved).__name__
                raise CheckpointError(
                    f"{path}: leaf '{name}' is {got}, expected {tuple(expected.shape)} {expected.dtype}"
                )
        elif type(saved) is not type(expected):
            raise CheckpointError(
                f"{path}: leaf '{name}' is {type(saved).__name__}, expected {type(expected).__name__}"
            )
    # Each tensor goes where the template's leaf is: a GPU checkpoint resumes on the CPU and the other way.
    leaves = [s.to(e.device) if isinstance(e, torch.Tensor) else s for s, e in zip(leaves, t_leaves, strict=True)]
    return optree.tree_unflatten(t_spec, leaves), content["metadata"]


def _read(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    header = len(MAGIC) + _DIGEST
    if len(raw) < header or raw[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path} is not an fgm checkpoint (bad header); refusing to load it")
    digest, payload = raw[len(MAGIC) : header], raw[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is corrupt (checksum mismatch: truncated or modified); refusing to load it")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a valid checksum over an unreadable payload
        raise CheckpointError(f"{path} could not be read: {exc}") from exc
