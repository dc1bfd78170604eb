"""The benchmarks' command line: the flags they share, absl's validators, and one `error:` line for a mistake.

Ranges are absl bounds and every other rule a validator, so a bad value is
refused while the command line is parsed, before any model or data is
touched. The validators and the parser are the experiments' own
(`pmkd_tf.experiments.cli`): absl's refusal, or a `UserError` of the
benchmark itself, is one `error: ...` line and exit code 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from absl import app, flags

from benchmarks.common import out_paths
from pmkd_tf import data, models
from pmkd_tf.errors import UserError
from pmkd_tf.experiments import cli as experiments_cli

FLAGS = flags.FLAGS


def validate(name: str, check: Callable[[str, Any], object], each: bool = False) -> None:
    """Refuse a bad --name while parsing: `check(name, value)` raises a UserError saying what is wrong.

    `each`: --name is a list flag that needs one value or more, each checked.
    """

    def raises(value) -> None:
        if each and not value:
            raise UserError(f"--{name} must list at least one value.")
        for item in value if each else [value]:
            check(name, item)

    experiments_cli.check(name, raises)


def rule(ok: Callable[[str], object], what: str) -> Callable[[str, str], None]:
    """The check that `ok(value)` holds (raising ValueError or ZeroDivisionError counts as not): "is not <what>"."""

    def check(name: str, value: str) -> None:
        try:
            good = ok(value)
        except (ValueError, ZeroDivisionError):
            good = False
        if not good:
            raise UserError(f"--{name}: {value!r} is not {what}.")

    return check


def number(text: str) -> float:
    """A number as a flag writes it (`1/16` allowed: widths are usually written so)."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


POSITIVE_NUMBER = rule(lambda text: number(text) > 0, "a positive number")
POSITIVE_INTEGER = rule(lambda text: int(text) > 0, "a positive integer")


def one_of(valid) -> Callable[[str, str], None]:
    """The check that a value is one of `valid`."""
    return rule(lambda value: value in valid, f"one of {', '.join(valid)}")


def _writable_out(name: str, out: str) -> None:
    """Fail before minutes of timing, not after, when the result cannot be written."""
    if not out:
        raise UserError(f"--{name} must not be empty.")
    parent = out_paths(out)[0].parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"--{name} {out}: {parent} is not a writable folder.")


def define_flags(name: str, timing: bool = False, tiny: bool = True) -> None:
    """The flags the benchmarks share; `name` names the result files. `timing`: the timed benchmarks' own."""
    flags.DEFINE_string("out", f"benchmarks/results/{name}", "Result path stem: writes <out>.json and <out>.md.")
    validate("out", _writable_out)
    flags.DEFINE_string("data_dir", None, f"Image-folder root; default ${data.ENV_DATA_DIR}, else tensorflow-datasets.")
    if tiny:
        flags.DEFINE_bool("tiny", False, "Small settings for tests; flags given explicitly still win. Tiny numbers "
                          "are not results.")
    if not timing:
        return
    flags.DEFINE_string("net", "resnet18", f"Network: {', '.join(models.NETS)} or any wrn_D_K.")
    validate("net", lambda _, net: models.validate_net(net))
    flags.DEFINE_integer("n", 3, "N of the NxN / 1xN / Nx1 filters (odd).", lower_bound=1)
    flags.register_validator("n", lambda n: n % 2 == 1, "--n must be odd")
    flags.DEFINE_integer("rounds", 5, "Timing rounds; each times every cell once, medians are over rounds.",
                         lower_bound=1)
    flags.DEFINE_integer("steps", 10, "Least timed steps per cell per round.", lower_bound=1)
    flags.DEFINE_float("target_seconds", 2.0, "Time each cell for about this long per round (more steps than "
                       "--steps for fast cells, so every timing window is long enough to trust); 0: --steps exactly.",
                       lower_bound=0)
    flags.DEFINE_integer("warmup", 3, "Untimed steps per cell before the first round (tracing, XLA compilation).",
                         lower_bound=1)
    flags.DEFINE_integer("distinct_batches", 8, "Real CIFAR-10 batches cached in memory and cycled through.",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the initial weights, the data subset and the round order.")


def define_cell_flags() -> None:
    """--width_multiplier and --batch_size of the benchmarks that time one net at one width and batch size."""
    flags.DEFINE_float("width_multiplier", 0.125, "Channel multiplier of every net (0.125 is the cpu preset's).")
    flags.register_validator("width_multiplier", lambda width: width > 0, "--width_multiplier must be > 0")
    flags.DEFINE_integer("batch_size", 128, "Batch size (the paper's 128).", lower_bound=1)


def run_benchmark(body: Callable[[], None], tiny: Mapping[str, Any] | None = None) -> None:
    """Parse the flags and run `body`: a bad flag or a user's mistake is one `error:` line and exit code 2.

    `tiny` holds the settings --tiny gives every flag not on the command line. (Not `experiments_cli.main`:
    its Ctrl-C message promises saved epochs.)
    """

    def parse(argv: list[str]) -> list[str]:
        if tiny:  # --tiny first, so that its settings are the values the other flags start from
            probe = flags.FlagValues()
            flags.DEFINE_bool("tiny", False, "", flag_values=probe)
            with contextlib.suppress(flags.Error):  # a bad --tiny is the parser's to report
                probe(argv, known_only=True)
                for name, value in tiny.items() if probe.tiny else ():
                    FLAGS[name].value = value
        return experiments_cli.parse(argv)

    def main(_: list[str]) -> None:
        try:
            body()
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(main, flags_parser=parse)
