"""What every command of `pmkd_tf.experiments` does alike: a user's mistake is one `error:` line and exit code 2.

absl refuses a bad flag while the command line is parsed (enums, bounds,
`mark_flag_as_required`, validators; `check` makes one of any function that
raises a `UserError`); `parse` prints that refusal as one line, and `main`
does the same for a `UserError` raised later, while the command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags

from pmkd_tf.errors import UserError


def _exit(message: str, code: int = 2) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(code)


def check(flag: str, raises: Callable[[object], object]) -> None:
    """Refuse a value of `flag` while parsing when `raises(value)` raises a UserError, with its message."""

    def checker(value: object) -> bool:
        try:
            raises(value)
        except UserError as error:
            raise flags.ValidationError(str(error)) from None
        return True

    flags.register_validator(flag, checker)


def parse(argv: list[str]) -> list[str]:
    """absl's parser (`app.run(..., flags_parser=parse)`), with a bad value as one `error:` line and exit 2."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as error:
        _exit(f"error: {error}")
    if len(rest) > 1:
        _exit(f"error: unexpected arguments {' '.join(rest[1:])}; use --flag=value.")
    return rest


def main(body: Callable[[], None]) -> None:
    """Run a command: its flags parsed by `parse`, then `body`; Ctrl-C says how to resume and exits 130."""

    def guarded(argv: list[str]) -> None:
        del argv
        try:
            body()
        except UserError as error:
            _exit(f"error: {error}")
        except KeyboardInterrupt:
            _exit("Interrupted: finished epochs are saved; re-run the same command to resume.", 130)

    app.run(guarded, flags_parser=parse)
