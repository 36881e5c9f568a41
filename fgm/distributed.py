"""Data-parallel training over ``torch.distributed``: gradients averaged inside the pure update.

Each process holds a full replica of the state and takes its slice of every
global batch (:func:`shard`). The only communication of a step is one
all-reduce of the gradients, placed where JAX code calls ``pmean``: between
the gradient and the optimizer, by wrapping the optimizer
(:func:`averaged_gradients`). The optimizer then sees the gradient of the
global batch's mean loss, so every replica takes the same step and the
replicas stay equal without a broadcast::

    from fgm import distributed, optim, train
    distributed.initialize()                       # torchrun's environment; a no-op in one process
    opt = distributed.averaged_gradients(optim.adam(1e-3))
    update = train.make_update(loss_fn, opt)
    x_local = distributed.shard(x_global)          # this rank's rows of the global batch

With equal slices the mean of the per-rank mean losses is the global mean,
so ``N`` processes take the step one process takes on the whole batch, up to
the order of floating-point summation (tested in float64 with 2 processes).
The same code runs over ``gloo`` (CPUs) and ``nccl`` (GPUs).
"""

from __future__ import annotations

import os
from typing import Any

import optree
import torch
import torch.distributed as dist

from fgm.optim import GradientTransformation
from fgm.tree import TensorTree

__all__ = ["all_mean", "averaged_gradients", "barrier", "initialize", "is_main", "rank", "shard", "world_size"]


def world_size() -> int:
    """The number of processes (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0, the process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Waits for every process (nothing in a single process)."""
    if world_size() > 1:
        dist.barrier()


def initialize(device: torch.device | str = "cpu") -> int:
    """Joins the process group described by torchrun's environment; returns the world size.

    Reads ``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
    (``torchrun --nproc-per-node N`` sets them). With ``WORLD_SIZE`` unset or 1
    nothing happens. The backend is ``nccl`` for CUDA devices and ``gloo``
    otherwise.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
    return world_size()


def shard(tree: TensorTree, index: int | None = None, count: int | None = None) -> TensorTree:
    """This rank's equal slice of every leaf's first axis (rows ``[i B/N, (i+1) B/N)``).

    Args:
      tree: tensors of a global batch, all with the same first axis ``B``.
      index, count: the slice (default: this process's rank and the world size).

    Returns:
      The same structure with ``[B / N, ...]`` leaves (views).

    Raises:
      ValueError: ``B`` is not a multiple of ``N``.
    """
    index, count = rank() if index is None else index, world_size() if count is None else count
    if count == 1:
        return tree

    def take(leaf: torch.Tensor) -> torch.Tensor:
        if leaf.shape[0] % count:
            raise ValueError(f"a global batch of {leaf.shape[0]} cannot be split into {count} equal slices")
        size = leaf.shape[0] // count
        return leaf[index * size : (index + 1) * size]

    return optree.tree_map(take, tree)


def all_mean(tree: TensorTree) -> TensorTree:
    """The mean over processes of every floating-point leaf, one all-reduce per dtype.

    Leaves of other dtypes (step counters) are returned unchanged; so is the
    whole tree in a single process.
    """
    n = world_size()
    if n == 1:
        return tree
    leaves, treedef = optree.tree_flatten(tree)
    out: list[Any] = list(leaves)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            by_dtype.setdefault(leaf.dtype, []).append(i)
    for indices in by_dtype.values():
        flat = torch.cat([leaves[i].detach().reshape(-1) for i in indices])  # one message per dtype
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= n
        for i, part in zip(indices, flat.split([leaves[i].numel() for i in indices]), strict=True):
            out[i] = part.view(leaves[i].shape)
    return optree.tree_unflatten(treedef, out)


def averaged_gradients(optimizer: GradientTransformation) -> GradientTransformation:
    """``optimizer`` applied to the gradients averaged over processes (``pmean``, then the update).

    The state is ``optimizer``'s own (same structure, so a checkpoint of a
    one-process run resumes in N processes and back). In a single process
    the gradients pass through untouched.
    """

    def update_fn(updates, state, params=None, *, donate: bool = False):
        averaged = all_mean(updates)
        # the averaged leaves are views of one buffer per dtype: donating them would let the optimizer
        # write one leaf through another's storage, so only the original gradients may be donated
        extra = {"donate": True} if donate and averaged is updates else {}
        return optimizer.update(averaged, state, params, **extra)

    return GradientTransformation(optimizer.init, update_fn)
