"""The one exception type for bad user input.

It lives at the bottom of the stack so that every layer (schedules, data, storage, search) raises the same type
where the input is first understood; every command turns it into ``error: ...`` on stderr and exit code 2.
Anything else is a bug or a runtime failure and keeps its traceback.
"""


class UsageError(ValueError):
    """Bad input from the user: an argument, a file or a storage URL. The message names the problem and the fix."""
