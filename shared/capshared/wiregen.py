"""Generates capshared/wire.py, the device's view of the message table (host-only tool).

messages.py is the source of truth but its dicts cost the board ~24 KB of heap; wire.py holds
the same facts as const() names (free on the device) and one bytes object of payload sizes.
tests/shared checks that wire.py is what this generator makes from messages.py today.

    python -m capshared.wiregen > shared/capshared/wire.py
"""

import sys

from capshared import messages

HEADER = '''# Generated from capshared/messages.py by capshared/wiregen.py: do not edit by hand.
#   python -m capshared.wiregen > shared/capshared/wire.py
# Message ids, request field offsets (NAME_FIELD), and SIZE: per message id the fixed payload
# size, plus 0x80 when a variable tail follows; 0xFF for an id that is not a message; U32_TOP:
# per request id, where its u32 fields' top bytes are (offset + 1, 0 = none).
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

'''


def generate():
    lines = [HEADER]
    for name, mid, fields in messages.TABLE:
        lines.append("%s = const(0x%02X)\n" % (name, mid))
    lines.append("\n")
    # Field offsets only for requests: the device reads requests in place and writes its own
    # frames field by field in table order, so response offsets would be dead weight (each
    # global name costs board RAM).
    for name, mid, fields in messages.TABLE:
        if not messages.is_request(mid):
            continue
        for fname, _t in fields:
            lines.append("%s_%s = const(%d)\n" % (name, fname.upper(), messages.OFFSETS[name][fname]))
    lines.append("\n")
    for name in ("GRANT_ENTRY_SIZE", "GRANTS_PER_PAGE", "CFG_WATCHDOG_MS", "CFG_LOCK_DELAY_MS", "CFG_FAILSAFE_MS",
                 "CFG_FAILSAFE_DELAY_MS", "CFG_LINK_LOSS_HOLD", "FAILSAFE_DELAY_MAX_MS", "AUDIT_ENTRY_SIZE",
                 "AUDIT_PER_PAGE", "AUD_GRANT", "AUD_END", "AUD_HANDOVER", "AUD_DELAY", "AUD_RESUMED", "AUD_SAFE",
                 "AUD_HOLD"):
        lines.append("%s = const(%d)\n" % (name, getattr(messages, name)))
    size = bytearray(b"\xff" * 256)
    for name, mid, fields in messages.TABLE:
        size[mid] = messages.FIXED[mid] | (0x80 if messages.HAS_TAIL[mid] else 0)
    lines.append("\nSIZE = %r\n" % bytes(size))
    # U32_TOP: per request id, up to four payload offsets (plus 1; 0 = none) of a u32 field's
    # last byte. A u32 must stay below 2**30 (a small int on a 32-bit board), so the board
    # refuses a request whose top byte there has either of its two high bits set.
    top = bytearray(4 * 0x40)
    for name, mid, fields in messages.TABLE:
        if not messages.is_request(mid):
            continue
        offs = [messages.OFFSETS[name][f] + 3 for f, t in fields if t == "I"]
        if len(offs) > 4:
            raise ValueError("%s: more than four u32 fields" % name)
        for k, o in enumerate(offs):
            top[4 * mid + k] = o + 1
    lines.append("U32_TOP = %r\n" % bytes(top))
    return "".join(lines)


if __name__ == "__main__":
    sys.stdout.write(generate())
