"""The loss terms: one module each, found here by discovery, so adding a term is one new file.

A method (`methods.METHODS`) names the terms it distils with; cross-entropy
is in every phase. Everything else is derived from the terms' declared
hyperparameters: the flags of `experiments.run` and `tune`, the settings an
experiment stores, a phase's identity, the tables and the tuner's search space.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping

from pmkd_tf.errors import UserError
from pmkd_tf.terms.base import Hyperparameter, Range, Term, Value

CROSS_ENTROPY = "ce"


def _discover() -> dict[str, type[Term]]:
    """Every Term subclass defined in a module of this package, by key, in module order."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            defined_here = isinstance(obj, type) and obj.__module__ == module.__name__
            if defined_here and issubclass(obj, Term) and "key" in vars(obj):
                found[obj.key] = obj
    return found


TERMS: dict[str, type[Term]] = _discover()
HYPERPARAMETERS: dict[str, Hyperparameter] = {h.name: h for term in TERMS.values() for h in term.hyperparameters}


def validate(values: Mapping[str, Value]) -> dict[str, Value]:
    """`values` parsed to each hyperparameter's type; a UserError naming the first unknown or invalid one."""
    parsed = {}
    for name, value in values.items():
        if name not in HYPERPARAMETERS:
            raise UserError(f"Unknown hyperparameter {name!r}; known: {', '.join(HYPERPARAMETERS)}.")
        try:
            parsed[name] = HYPERPARAMETERS[name].parse(value)
        except ValueError as error:
            raise UserError(str(error)) from None
    return parsed


def values(keys: Iterable[str], given: Mapping[str, Value]) -> dict[str, Value]:
    """The hyperparameters a loss of `keys` reads, as its phases record them.

    A used term's hyperparameters take their given value (else the default);
    an unused term's take their `unused` value where they have one (rho 0
    without the feature term, alpha 0 without KD, so cross-entropy weighs 1).
    """
    keys = set(keys)
    chosen = {}
    for key, term in TERMS.items():
        for h in term.hyperparameters:
            if key in keys:
                chosen[h.name] = h.parse(given.get(h.name, h.default))
            elif h.unused is not None:
                chosen[h.name] = h.unused
    return chosen


def make(keys: Iterable[str], given: Mapping[str, Value]) -> list[Term]:
    """Cross-entropy and the terms `keys`, each with the values of `values` (cross-entropy's own included)."""
    keys = [CROSS_ENTROPY, *keys]
    chosen = values(keys, given)
    return [TERMS[key](chosen) for key in keys]


__all__ = ["CROSS_ENTROPY", "HYPERPARAMETERS", "TERMS", "Hyperparameter", "Range", "Term", "Value", "make",
           "validate", "values"]
