"""The one exception type for bad user input.

It lives at the bottom of the stack so that every layer (schedules, data, storage, search) raises the same type
where the input is first understood; every command turns it into ``error: ...`` on stderr and exit code 2.
Anything else is a bug or a runtime failure and keeps its traceback.
"""


import errno

# faults of the environment a run needs, not of the run: no space, a quota, an I/O error, a read-only or stale file
# system, a permission changed under the run, a connection lost, memory or open files exhausted. Every layer that
# would discard work on an error (a checkpoint it cannot read) leaves these alone: the work is retried, not lost.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM,
                                errno.ESTALE, errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.EPIPE,
                                errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOMEM, errno.EMFILE,
                                errno.ENFILE})


class UsageError(ValueError):
    """Bad input from the user: an argument, a file or a storage URL. The message names the problem and the fix."""
