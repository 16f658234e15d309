"""The one exception type for problems the user can fix: bad input, missing files, bad options.

The CLI prints its message on one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class EdgeannError(Exception):
    """A problem with the user's input, described in one line."""

    exit_code = 2
