"""The one error tree of capwarden. Callers catch `CapwardenError`.

Every error that reaches a user says what was wrong and what to do, and never contains a
token or key material.
"""


class CapwardenError(Exception):
    """Base class of every error capwarden raises on purpose."""

    #: Exit code for the command line (S4: 1 denied or invalid input, 2 usage error).
    exit_code = 1


class UsageError(CapwardenError):
    """The command line or a configuration file asks for something that cannot be done.

    Examples: a missing store folder, a `--grant` that is not PATTERN=MODES.
    """

    exit_code = 2


class CapError(CapwardenError):
    """A decision or failure with a CAP error code (cap-supplement.md S2).

    `code` is the S2 name (for example "E_DESCRIPTOR_EXPIRED"), `field` the offending field
    when there is one. Examples: a descriptor whose signature does not verify, a resource held
    by another session.
    """

    def __init__(self, code, message, field=None):
        self.code = code
        self.field = field
        super().__init__("%s: %s" % (code, message))
        self.message = message


class StoreError(CapwardenError):
    """The local store cannot be read or written (missing, wrong permissions, corrupt)."""


class LinkError(CapwardenError):
    """The link to a board failed. Examples: the port cannot be opened, the board went away."""


class LinkTimeout(LinkError, TimeoutError):
    """The board did not answer a request within its timeout, retries included."""


class LinkClosed(LinkError):
    """The link was closed, by us or because the port disappeared."""


class DeviceReset(LinkError):
    """The board rebooted (its boot id changed): every grant it held is gone."""


class DeviceError(CapError):
    """The board refused a request. `code` is the device code name (E_DEV_... or S2)."""


class SimError(CapwardenError):
    """The virtual board could not be started, deployed to, or controlled."""


class BadRequest(CapwardenError, ValueError):
    """A request the host will not send: nothing went to the board. A caller's mistake.

    Examples: a lease over MAX_LEASE_MS, an integer field of 2**30 or more, arguments that make
    the payload longer than a frame. Also a ValueError, as the codec's own error was.
    """


class BadReply(LinkError):
    """The board answered a request with a frame that is not its answer.

    Examples: PING answered with RELEASE_R, a GRANTS page that is not a whole number of
    entries; a board flashed by another version, or a bug on it. Flash the board again.
    """
