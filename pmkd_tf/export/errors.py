"""The errors of the export package: user mistakes, each with an actionable one-line message.

All are `pmkd_tf.errors.UserError`s (so `ValueError`s): the CLI turns any of
them into one line on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

from pmkd_tf.errors import UserError


class ExportError(UserError):
    """A model or file the exporter cannot use; the message says what to do."""


class NotPMKDModelError(ExportError):
    """The model is not a PMKD model (no `{"logits", "features"}` output or no `stem_conv`)."""


class UnsupportedOpError(ExportError):
    """The converted model uses an op that TensorFlow Lite Micro cannot run."""


class StreamingError(ExportError):
    """The model cannot run row by row (an NxN layer after the stem, or an unsupported layer)."""
