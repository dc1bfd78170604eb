"""The data layer's error: a user mistake with a one-line message that says what to do.

A `pmkd_tf.errors.UserError`, so every command line prints it on one line and
exits with code 2 instead of a traceback.
"""

from __future__ import annotations

from pmkd_tf.errors import UserError


class DataError(UserError):
    """A dataset that cannot be found, read or downloaded; the message says what to do."""
