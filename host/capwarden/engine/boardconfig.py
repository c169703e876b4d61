"""Board settings the engine gives every board it drives: at start, and again after a board
reset (a rebooted board has forgotten them). Without this the board's CONFIG keys (lock-delay,
failsafe, failsafe delay window, link-loss hold) existed on the wire and no host ever set them.

    {"failsafe_ms": 2000, "failsafe_delay_ms": 500, "lock_delay_ms": 250, "link_loss_hold": ["led"]}

`failsafe_ms`: no grant outlives that much host silence (0: each lease decides).
`failsafe_delay_ms` (faults.md 68): a lost lease waits that long for a heartbeat first.
`lock_delay_ms` (faults.md 33): safe hold after a holder was lost, before the next grant.
`link_loss_hold` (faults.md 69): resources (board names) that keep their state on link loss
instead of going safe; every other resource goes safe, the default, which fails closed.

A board that refuses a setting is not driven at all (start fails): an engine that believes a
failsafe is in force when it is not is worse than one that does not start.
"""

import logging

from capshared import wire as W
from capwarden.errors import DeviceError, LinkError, UsageError

log = logging.getLogger("capwarden.engine")

# setting -> (CONFIG key, largest value). One table: parse, apply and --help read it.
SETTINGS = {
    "failsafe_ms": (W.CFG_FAILSAFE_MS, 3600000),
    "failsafe_delay_ms": (W.CFG_FAILSAFE_DELAY_MS, W.FAILSAFE_DELAY_MAX_MS),
    "lock_delay_ms": (W.CFG_LOCK_DELAY_MS, 600000),
    "link_loss_hold": (W.CFG_LINK_LOSS_HOLD, None),
}


def parse(obj, where="board settings"):
    """A dict from the config file or --board-setting items -> checked settings. UsageError."""
    if not isinstance(obj, dict):
        raise UsageError("%s: an object with %s" % (where, ", ".join(sorted(SETTINGS))))
    out = {}
    for name, value in obj.items():
        if name not in SETTINGS:
            raise UsageError("%s: unknown setting %r (known: %s)" % (where, name, ", ".join(sorted(SETTINGS))))
        top = SETTINGS[name][1]
        if top is None:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise UsageError("%s: %s is a list of resource names, e.g. [\"led\"]" % (where, name))
            out[name] = list(dict.fromkeys(value))
        else:
            if type(value) is not int or not 0 <= value <= top:
                raise UsageError("%s: %s is a whole number of milliseconds, 0..%d (got %r)" % (where, name, top, value))
            out[name] = value
    return out


def parse_items(items):
    """['failsafe_ms=2000', 'link_loss_hold=led,camera'] -> the same dict as parse()."""
    obj = {}
    for it in items or ():
        name, sep, value = it.partition("=")
        if not sep:
            raise UsageError("--board-setting takes NAME=VALUE, e.g. failsafe_ms=2000 (got %r)" % it)
        if SETTINGS.get(name, (0, 0))[1] is None:
            obj[name] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            obj[name] = int(value) if value.isdigit() else value
    return parse(obj, "--board-setting")


def hold_mask(board, names):
    """Resource names -> the CONFIG bit mask (bit k: resource k). UsageError for a name the
    board does not have, rather than a mask that silently holds nothing."""
    index = {r.name: r.index for r in board.info.resources}
    mask = 0
    for n in names:
        if n not in index:
            raise UsageError("link_loss_hold names %r, which board %s does not have (it has: %s)" % (
                n, board.info.name, ", ".join(index)))
        mask |= 1 << index[n]
    return mask


async def apply(board, settings):
    """Send every setting to `board`. Raises UsageError (a name it lacks) or LinkError /
    DeviceError (it refused or did not answer)."""
    for name, value in settings.items():
        key = SETTINGS[name][0]
        if name == "link_loss_hold":
            value = hold_mask(board, value)
        await board.configure(key, value)


async def reapply(engine, h):
    """After a reset: the board forgot its settings. Logged and audited when it refuses."""
    if not engine.board_settings:
        return
    try:
        await apply(h.board, engine.board_settings)
    except (DeviceError, LinkError, UsageError) as exc:
        log.error("board %s: its settings could not be given again after a reset: %s", h.name, exc)
        engine.audit.record("board", "failed", "settings_not_applied", board=h.name, detail=str(exc)[:200])
        return
    engine.audit.record("board", "done", "settings_applied", board=h.name, **{
        k: (",".join(v) if isinstance(v, list) else v) for k, v in engine.board_settings.items()})
