"""The pacemaker: an ensemble of the 1xN (row) and Nx1 (column) models.

It is the paper's intermediate teacher. Its logits and every feature tap are
the mean of its members', so it exposes exactly the same outputs as any one
member and can stand wherever a teacher or a student stands. Both members are
trained (phase 1) and each is an ordinary nested model that can be saved and
loaded on its own: the Fig. 2 reading of phase 3 starts the student from the
row member. A single-member pacemaker is the paper's Table 4 ablation.
"""

from __future__ import annotations

import keras

from pmkd_tf.errors import UserError
from pmkd_tf.models.config import NetConfig

PACEMAKER_KINDS = {"ensemble": ("1xN", "Nx1"), "column": ("Nx1",), "row": ("1xN",)}


def build_pacemaker(config: NetConfig, kind: str = "ensemble") -> keras.Model:
    """Build a pacemaker of the net in `config` (its `filter_shape` is ignored)."""
    from pmkd_tf.models import build

    if kind not in PACEMAKER_KINDS:
        raise UserError(f"Unknown pacemaker kind {kind!r}; valid: {', '.join(PACEMAKER_KINDS)}.")
    members = [build(config.with_filter_shape(shape)) for shape in PACEMAKER_KINDS[kind]]
    inputs = keras.Input(config.input_shape, name="image")
    outputs = [member(inputs) for member in members]
    merged = outputs[0]
    if len(outputs) > 1:
        taps = zip(*(o["features"] for o in outputs))  # each tap of every member
        merged = {"logits": keras.layers.Average(name="logits_mean")([o["logits"] for o in outputs]),
                  "features": [keras.layers.Average(name=f"feature{i}_mean")(list(tap)) for i, tap in enumerate(taps)]}
    return keras.Model(inputs, merged, name=f"pacemaker_{kind}")


def pacemaker_member(pacemaker: keras.Model, filter_shape: str) -> keras.Model:
    """The member of `pacemaker` with the given filter shape ("1xN" or "Nx1")."""
    for layer in pacemaker.layers:
        if isinstance(layer, keras.Model) and layer.name.endswith(f"_{filter_shape}"):
            return layer
    raise UserError(f"{pacemaker.name} has no {filter_shape} member.")
