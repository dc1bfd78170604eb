"""Files that survive a kill at any instant: atomic writes and process locks.

Every result on disk is written to a temporary name and renamed into place
(`os.replace` is atomic on POSIX), so a reader sees the old file or the new
one, never half of one. Locks are `flock`s, which die with their process,
so a killed runner never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pmkd_tf.errors import UserError


def atomic_save(path: Path, save: Callable[[Path], None]) -> None:
    """`save(path)` (e.g. `model.save`), atomically: to a temp name that is per process, so concurrent writers
    never collide, and keeps the suffix Keras checks; then renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    save(tmp)
    os.replace(tmp, path)


def atomic_write(path: Path, text: str) -> None:
    atomic_save(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def lock(path: Path, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` for the block: wait for it or, given `busy`, refuse at once with that
    message (a `UserError`) while another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if busy is None else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(busy) from None
        yield
