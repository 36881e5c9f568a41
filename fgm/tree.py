"""Pytree helpers over ``optree``.

Parameters, gradients and optimizer states are pytrees: nested dicts, tuples,
lists and NamedTuples whose leaves are tensors. ``optree`` sorts dict keys when
flattening, so two trees with the same keys always flatten in the same order.

``TensorTree`` is the type alias used in annotations for such a tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optree
import torch

__all__ = [
    "TensorTree",
    "tree_allclose",
    "tree_clone",
    "tree_detach",
    "tree_equal",
    "tree_leaves",
    "tree_map",
    "tree_size",
    "tree_to",
]

TensorTree = Any  # a pytree whose leaves are torch.Tensors


def tree_map(fn: Callable[..., Any], tree: TensorTree, *rest: TensorTree) -> TensorTree:
    """Applies ``fn`` leafwise (with optree's ``none_is_leaf=False`` default).

    Args:
      fn: called as ``fn(leaf, *other_leaves)`` for each leaf position.
      tree: the tree whose structure the result takes.
      *rest: trees with the same structure as ``tree``.

    Returns:
      A tree of ``tree``'s structure holding ``fn``'s outputs.
    """
    return optree.tree_map(fn, tree, *rest)


def tree_leaves(tree: TensorTree) -> list[Any]:
    """The leaves of ``tree`` in optree's (sorted-key) order.

    Returns:
      A list of the leaves (``None`` is not a leaf).
    """
    return optree.tree_leaves(tree)


def tree_clone(tree: TensorTree) -> TensorTree:
    """A deep copy of every tensor leaf (detached).

    Returns:
      A tree of the same structure whose tensors share no storage with ``tree``.
    """
    return tree_map(lambda t: t.detach().clone(), tree)


def tree_detach(tree: TensorTree) -> TensorTree:
    """Detaches every tensor leaf from the autograd graph (no copy).

    Returns:
      A tree of the same structure; tensors alias the originals, other leaves are kept.
    """
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def tree_to(tree: TensorTree, device: torch.device | str, non_blocking: bool = False) -> TensorTree:
    """Every tensor leaf on ``device`` (leaves already there are kept, not copied); other leaves as they are.

    Args:
      tree: any tree (a state with keys and step counters included).
      device: the target device, e.g. ``"cuda:0"``.
      non_blocking: asynchronous host-to-device copies (from pinned memory).

    Returns:
      A tree of the same structure whose tensors live on ``device``.
    """
    return tree_map(lambda t: t.to(device, non_blocking=non_blocking) if isinstance(t, torch.Tensor) else t, tree)


def tree_size(tree: TensorTree) -> int:
    """The total number of scalars in the tensor leaves of ``tree``.

    Returns:
      ``Σ leaf.numel()`` over tensor leaves (other leaves count 0).
    """
    return sum(t.numel() for t in tree_leaves(tree) if isinstance(t, torch.Tensor))


def tree_equal(a: TensorTree, b: TensorTree) -> bool:
    """True when ``a`` and ``b`` have the same structure and bitwise-equal leaves.

    Args:
      a, b: trees; tensor leaves must also match in shape and dtype, other
        leaves (ints, keys) are compared with ``==``.

    Returns:
      A Python bool.
    """
    leaves_a, spec_a = optree.tree_flatten(a)
    leaves_b, spec_b = optree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    return all(_leaf_equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True))


def tree_allclose(a: TensorTree, b: TensorTree, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """True when ``a`` and ``b`` have the same structure and close leaves.

    Args:
      a, b: trees; tensor leaves are compared with ``torch.allclose``, other leaves with ``==``.
      rtol, atol: tolerances, as in ``torch.allclose``.

    Returns:
      A Python bool.
    """
    leaves_a, spec_a = optree.tree_flatten(a)
    leaves_b, spec_b = optree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    return all(
        torch.allclose(x, y, rtol=rtol, atol=atol) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def _leaf_equal(x: Any, y: Any) -> bool:
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
    return x == y
