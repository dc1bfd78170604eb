"""The one exception type for a user's mistake.

Command lines print its message on one line and exit with code 2; any other
exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input (a name, a number, a path, a file) with a message that says what to do."""
