"""The project's errors: one exception type for a user's mistake, and its kinds.

Command lines print its message on one line and exit with code 2; any other
exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input (a name, a number, a path, a file) with a message that says what to do; every kind below is one."""


class DataError(UserError):
    """A dataset that cannot be found, read or downloaded."""


class ExportError(UserError):
    """A model or file the exporter cannot use."""


class NotPMKDModelError(ExportError):
    """The model is not a PMKD model (no `{"logits", "features"}` output or no `stem_conv`)."""


class UnsupportedOpError(ExportError):
    """The converted model uses an op that TensorFlow Lite Micro cannot run."""


class StreamingError(ExportError):
    """The model cannot run row by row (an NxN layer after the stem, or an unsupported layer)."""
