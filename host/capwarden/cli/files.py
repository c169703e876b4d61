"""Input and output files of the command line, with the exit codes of the one table (_common):
a file that cannot be opened or created is a usage error (2), one that holds the wrong thing
is invalid input (1). Every check runs before the slow work (a board, a connection)."""

import os

from capwarden.errors import CapwardenError, UsageError

class InputError(CapwardenError):
    """A file or value that was read is not what it must be (exit 1, CapwardenError's code).
    Examples: a key file that is not JSON, a TLS certificate that does not parse."""


def _os_reason(exc):
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def check_input(path, what, option=None):
    """Refuse at once (UsageError, exit 2) an input file that is missing, a folder or unreadable,
    before any slow work (a board, a connection). `option` names the flag in the message."""
    flag = "%s " % option if option else ""
    if not path:
        raise UsageError("%sneeds a file name" % flag)
    if os.path.isdir(path):
        raise UsageError("%s%s: %s is a folder, not a file" % (flag, what, path))
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UsageError("cannot read %s %s%s: %s" % (what, flag, path, _os_reason(exc))) from None


def read_input(path, what, limit, code):
    """Bytes of an input file of at most `limit` bytes (the credential's own size limit).

    A file that cannot be read at all (missing, a folder, no permission) is a usage error
    (UsageError, exit 2). A larger file is invalid input: CapError(code) (exit 1), decided
    from its size before it is read where the size is known, and never read past limit + 1
    bytes (a pipe or a file that grows). What it holds is the caller's to judge (exit 1).
    """
    from capwarden.errors import CapError

    def too_large(size):
        return CapError(code, "%s is %s, more than the %d bytes a %s may have" % (path, size, limit, what), None)

    if os.path.isdir(path):
        raise UsageError("cannot read %s %s: it is a folder, not a file" % (what, path))
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise too_large("%d bytes" % size)
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError("cannot read %s %s: %s" % (what, path, _os_reason(exc))) from None
    if len(data) > limit:
        raise too_large("longer than its size said")
    return data


def load_signing_key(path):
    """The issuer's SigningKey from `--key PATH`. Missing or unreadable: UsageError (2); not a
    key file: InputError (1)."""
    from capwarden.credentials.issue import SigningKey

    check_input(path, "signing key", "--key")
    try:
        return SigningKey.load(path)
    except UsageError as exc:   # the credential layer calls a bad key file a usage error
        raise InputError("%s (expected PREFIX.key as written by 'capwarden keys generate')" % exc) from None


def check_output(path, what="output", option="--out"):
    """Refuse at once (UsageError, exit 2) an output path that cannot be written: an existing
    folder, a parent folder that does not exist (never created silently) or is not writable."""
    if not path:
        raise UsageError("%s needs a file name" % option)
    if os.path.isdir(path):
        raise UsageError("%s %s is a folder; give a file name inside it" % (option, path))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError("%s %s: the folder %s does not exist; create it first" % (option, path, parent))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError("%s %s: cannot write %s there: permission denied" % (option, path, what))
    # Try it: access() says yes to root on a read-only or virtual file system (/proc).
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".capwarden-probe-", dir=parent)
    except OSError as exc:
        raise UsageError("%s %s: cannot write %s in %s: %s" % (option, path, what, parent, _os_reason(exc))) from None
    os.close(fd)
    os.unlink(probe)


def write_output(path, data, mode=0o644, what="output", option="--out"):
    """Write `data` atomically to `path` (checked by check_output first). Raises UsageError."""
    from capwarden.credentials.store import write_atomic

    check_output(path, what, option)
    try:
        write_atomic(path, data, mode)
    except OSError as exc:
        raise UsageError("%s %s: cannot write %s: %s" % (option, path, what, _os_reason(exc))) from None
