"""The one table that says what each method (a row of the paper's tables) is.

A method is its distillation terms (keys of `terms.TERMS`; cross-entropy is
always in), whether it goes through a pacemaker, how many epochs its student
trains relative to one phase, and its label in the results table. The phase
planner (`pipeline.final_phase`, `pipeline.needed_phases`), the tuner, the
results table and the benchmarks all read this table, so adding a method is
one line here.

    teacher                      NxN net, cross-entropy
    baseline                     1xN student, cross-entropy
    kd | fitnet | kd_fitnet | at teacher -> student
    pm_kd | pm_fitnet | pmkd     phase 1 teacher -> pacemaker,
    | pm_at                      phase 2 pacemaker -> student,
                                 phase 3 teacher -> student (from phase 2)
    *_long                       compute-matched controls: the student trains 2x the epochs
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pmkd_tf import terms
from pmkd_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the paper's tables."""

    label: str
    terms: tuple[str, ...] = ()  # distillation terms besides cross-entropy; () trains on labels alone
    via_pacemaker: bool = False
    epoch_factor: int = 1  # the student's epochs, in phases
    trains_teacher: bool = False

    def __post_init__(self) -> None:
        unknown = [t for t in self.terms if t not in terms.TERMS or t == terms.CROSS_ENTROPY]
        if unknown:
            raise ValueError(f"Unknown distillation term(s) {unknown}; terms: {', '.join(terms.TERMS)}.")

    @property
    def family(self) -> str:
        """The name of its set of terms ("ce", "kd", "feature", "kd_feature"): phases with one family share weights."""
        return "_".join(self.terms) or terms.CROSS_ENTROPY

    @property
    def tunable(self) -> tuple[str, ...]:
        """The hyperparameters its loss reads that the tuner can search."""
        return tuple(h.name for t in self.terms for h in terms.TERMS[t].hyperparameters if h.search)

    def values(self, given: Mapping[str, terms.Value]) -> dict[str, terms.Value]:
        """The hyperparameters its loss reads (`terms.values`): how a phase that distils records them."""
        return terms.values(self.terms, given)


METHODS: dict[str, Method] = {
    "teacher": Method("Teacher", trains_teacher=True),
    "baseline": Method("Baseline"),
    "kd": Method("KD", ("kd",)),
    "fitnet": Method("FitNet", ("feature",)),
    "kd_fitnet": Method("KD + FitNet", ("kd", "feature")),
    "pm_kd": Method("PM + KD", ("kd",), via_pacemaker=True),
    "pm_fitnet": Method("PM + FitNet", ("feature",), via_pacemaker=True),
    "pmkd": Method("PMKD", ("kd", "feature"), via_pacemaker=True),
    "baseline_long": Method("Baseline (2x epochs)", epoch_factor=2),
    "kd_fitnet_long": Method("KD + FitNet (2x epochs)", ("kd", "feature"), epoch_factor=2),
    "at": Method("AT", ("at",)),
    "pm_at": Method("PM + AT", ("at",), via_pacemaker=True),
}
PAPER_METHODS = ("teacher", "baseline", "kd", "fitnet", "kd_fitnet", "pm_kd", "pm_fitnet", "pmkd")


def get(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"Unknown method {name!r}; valid methods: {', '.join(METHODS)}.")
    return METHODS[name]


def label(name: str) -> str:
    """The results-table label of a method; a name the table does not know (an old results.json) is shown as is."""
    return METHODS[name].label if name in METHODS else name
