"""Training states written by older versions of fgm, and loading their checkpoints into today's states.

A checkpoint stores its tree's structure (type names and fields), and
:func:`fgm.checkpoint.load` refuses a file whose structure differs from the
template's. When a state type gains a field, the runs saved before still
hold the old structure; :func:`load_state` reads them into the new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import optree

from fgm import checkpoint, ensemble, train

__all__ = ["load_state", "old_layout"]

# The state layouts written before every model's update took a layer state (fgm.types.UpdateFn): a single
# model's TrainState without ``model_state``, and ensembles as EnsembleState (no layer state) or
# StatefulEnsembleState. Same type names, same fields: their checkpoints' structures match these.
_OLD_LAYOUTS = {
    "single": NamedTuple("TrainState", [("params", Any), ("opt_state", Any), ("step", int), ("key", Any)]),
    "ensemble": NamedTuple("EnsembleState", [("params", Any), ("opt_state", Any), ("step", int), ("keys", Any)]),
    "ensemble_with_layer_state": NamedTuple(
        "StatefulEnsembleState",
        [("params", Any), ("opt_state", Any), ("model_state", Any), ("step", int), ("keys", Any)],
    ),
}


def old_layout(template) -> Any:
    """``template`` in the layout an older fgm saved it in, or ``None`` where that layout was the same."""
    no_layer_state = not optree.tree_leaves(template.model_state)
    if isinstance(template, train.TrainState) and no_layer_state:
        old = _OLD_LAYOUTS["single"]
    elif isinstance(template, ensemble.EnsembleState):
        old = _OLD_LAYOUTS["ensemble" if no_layer_state else "ensemble_with_layer_state"]
    else:
        return None
    return old(**{field: getattr(template, field) for field in old._fields})


def load_state(path: Path, template) -> tuple[Any, dict]:
    """:func:`fgm.checkpoint.load`, also reading the state layout of runs written by older code.

    Raises:
      fgm.checkpoint.CheckpointError: as :func:`fgm.checkpoint.load` against
        ``template`` when the checkpoint matches neither layout.
    """
    try:
        return checkpoint.load(path, template)
    except checkpoint.CheckpointError as error:
        old = old_layout(template)
        if old is None:
            raise
        try:
            state, meta = checkpoint.load(path, old)
        except checkpoint.CheckpointError:
            raise error from None
        return template._replace(**state._asdict()), meta
