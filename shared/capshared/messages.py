"""The message table: every frame's id, fields and sizes. Host and device both import it.

Field types: "B" u8, "H" u16 (little-endian), "I" u32 (little-endian, values < 2**30, see
limits.U32_LIMIT), "s" the rest of the payload as bytes (only as the last field), "N" 8 raw bytes (a link nonce),
"K" 4 raw bytes (a link key id).

Ids: requests 0x01-0x3F (host -> device); the response to request X is X | 0x80; device
events 0x40-0x7F (unsolicited, request id 0); QUEUED (provisional) and ERROR are shared.
Every request gets exactly one final response: its X | 0x80, or ERROR. ACQUIRE may first get
QUEUED, which frees the link's flow-control credit while the request waits on the device.
"""

# (name, id, ((field, type), ...))
TABLE = (
    # Link and board.
    # Link authentication (docs/link-auth.md): nh, the host's nonce; nb, the board's, which
    # HELLO_R carries in the session it proposes; ANNOUNCE's key_id (zeros: the board has no
    # key and refuses every frame) tells a host which key the board holds, nothing more.
    ("HELLO", 0x01, (("nh", "N"),)),
    # hb_seq: the newest heartbeat sequence number the board accepted, which a new host's
    # heartbeats must pass (a restarted engine counts from there, not from 0); rid_hw: the
    # newest request id it accepted (a new host numbers its requests on from there).
    ("HELLO_R", 0x81, (("proto", "B"), ("boot_id", "I"), ("rx_buf", "H"), ("max_raw", "B"),
                       ("n_res", "B"), ("uptime_ms", "I"), ("hb_seq", "I"), ("rid_hw", "H"),
                       ("nb", "N"), ("info", "s"))),
    ("RES_INFO", 0x02, (("res", "B"),)),
    ("RES_INFO_R", 0x82, (("res", "B"), ("cls", "B"), ("modes", "B"), ("state", "B"),
                          ("name", "s"))),
    ("PING", 0x03, (("nonce", "I"),)),
    ("PING_R", 0x83, (("nonce", "I"), ("mem_free", "I"), ("mem_alloc", "I"), ("uptime_ms", "I"))),
    ("STATS", 0x04, ()),
    ("STATS_R", 0x84, (("bad_crc", "H"), ("bad_frame", "H"), ("overrun", "H"), ("lost", "H"),
                       ("dup", "H"), ("replayed", "H"), ("frames_rx", "I"), ("frames_tx", "I"),
                       ("stale", "H"), ("bad_tag", "H"), ("replay", "H"), ("no_key", "H"))),
    ("REPL", 0x05, ()),
    ("REPL_R", 0x85, ()),
    ("CONFIG", 0x06, (("key", "B"), ("value", "I"))),
    ("CONFIG_R", 0x86, (("key", "B"), ("value", "I"))),
    # A new link key (capwarden link rekey): its 16 bytes encrypted under the current key
    # (AES-128, one block). Answered under the current session, then in force: every session
    # ends and the host says HELLO with the new key (docs/link-auth.md "Rekey").
    ("REKEY", 0x07, (("wrapped", "s"),)),
    ("REKEY_R", 0x87, ()),
    # Control: locks, leases, fencing, handover, actuation.
    ("ACQUIRE", 0x10, (("res", "B"), ("modes", "B"), ("session", "I"), ("lease_ms", "I"),
                       ("wait_ms", "I"))),
    ("ACQUIRE_R", 0x90, (("res", "B"), ("modes", "B"), ("session", "I"), ("epoch", "I"),
                         ("lease_ms", "I"))),
    ("RELEASE", 0x11, (("res", "B"), ("session", "I"), ("epoch", "I"))),
    ("RELEASE_R", 0x91, (("res", "B"), ("session", "I"), ("epoch", "I"))),
    ("HANDOVER", 0x12, (("res", "B"), ("from_session", "I"), ("from_epoch", "I"),
                        ("to_session", "I"), ("modes", "B"), ("lease_ms", "I"))),
    ("HANDOVER_R", 0x92, (("res", "B"), ("to_session", "I"), ("epoch", "I"))),
    ("HEARTBEAT", 0x13, (("hb_seq", "I"),)),
    ("HEARTBEAT_R", 0x93, (("hb_seq", "I"), ("grants", "H"), ("failsafes", "H"), ("override", "I"))),
    ("SUSPEND", 0x14, (("session", "I"), ("suspended", "B"))),
    ("SUSPEND_R", 0x94, (("session", "I"), ("suspended", "B"), ("grants", "B"))),
    ("ACTUATE", 0x15, (("res", "B"), ("session", "I"), ("epoch", "I"), ("op", "B"),
                       ("args", "s"))),
    ("ACTUATE_R", 0x95, (("res", "B"), ("op", "B"), ("data", "s"))),
    ("END_SESSION", 0x16, (("session", "I"),)),
    ("END_SESSION_R", 0x96, (("session", "I"), ("released", "B"))),
    ("GRANTS", 0x17, (("res", "B"), ("start", "H"))),
    # entries: (session u32, epoch u32, modes u8) * n, at most GRANTS_PER_PAGE
    ("GRANTS_R", 0x97, (("res", "B"), ("total", "H"), ("start", "H"), ("entries", "s"))),
    # The board's audit ring (faults.md 70): entries numbered from 1; up to AUDIT_PER_PAGE of
    # them from `from_seq` on (or from the oldest still held). count: entries ever recorded;
    # first: the number of the first entry returned. Entry: kind u8, res u8, reason u8,
    # session u32, epoch u32, t_ms u32 (the board's uptime) = AUDIT_ENTRY_SIZE bytes.
    ("AUDIT", 0x18, (("from_seq", "I"),)),
    ("AUDIT_R", 0x98, (("count", "I"), ("first", "I"), ("entries", "s"))),
    ("SIM_PLUG", 0x20, (("res", "B"), ("present", "B"))),
    ("SIM_PLUG_R", 0xA0, (("res", "B"), ("state", "B"))),
    # Device events.
    ("ANNOUNCE", 0x40, (("proto", "B"), ("boot_id", "I"), ("rx_buf", "H"), ("max_raw", "B"),
                        ("n_res", "B"), ("uptime_ms", "I"), ("key_id", "K"), ("info", "s"))),
    ("EV_RESOURCE", 0x41, (("res", "B"), ("state", "B"), ("reason", "B"))),
    ("EV_GRANT_ENDED", 0x42, (("res", "B"), ("session", "I"), ("epoch", "I"), ("reason", "B"))),
    ("EV_FAILSAFE", 0x43, (("reason", "B"), ("resources", "B"), ("silent_ms", "I"))),
    # The board's manual override input (an RC mode switch; on the virtual board a file): mask
    # bit k, resource k is under a human's direct control, granted to nobody exclusively; ended:
    # the exclusive grants it ended (reason override) since the last report. Sent when the input
    # changes and, while it is on, at the first heartbeat of every new host session (docs/device.md).
    ("EV_OVERRIDE", 0x44, (("mask", "I"), ("ended", "B"))),
    # Shared responses.
    ("QUEUED", 0xFE, (("res", "B"), ("position", "B"))),
    ("ERROR", 0xFF, (("code", "B"), ("detail", "I"))),
)

GRANT_ENTRY_SIZE = 9
GRANTS_PER_PAGE = 10   # 10 * 9 + 5 bytes within limits.MAX_PAYLOAD (110)

# CONFIG keys.
CFG_WATCHDOG_MS = 1      # arm machine.WDT with this timeout; cannot be disarmed
CFG_LOCK_DELAY_MS = 2    # safe hold after a holder is lost (not a clean release)
CFG_FAILSAFE_MS = 3      # host silence after which every grant ends (0: use each lease)
CFG_FAILSAFE_DELAY_MS = 4   # a lost lease waits this long for a heartbeat before the failsafe
CFG_LINK_LOSS_HOLD = 5   # bit k set: resource k keeps its state on link loss (default: safe)

FAILSAFE_DELAY_MAX_MS = 30000

AUDIT_ENTRY_SIZE = 15
AUDIT_PER_PAGE = 6    # 6 * 15 + 8 bytes within limits.MAX_PAYLOAD (110)
# Audit ring entry kinds. END carries the grant-ended reason (limits.REASONS).
AUD_GRANT = 1      # a grant or upgrade: a new epoch
AUD_END = 2        # a grant ended: released, session ended, removed, fault
AUD_HANDOVER = 3   # a grant moved to another session (session: the new holder)
AUD_DELAY = 4      # a lease ran out: the failsafe waits CFG_FAILSAFE_DELAY_MS for a heartbeat
AUD_RESUMED = 5    # a heartbeat came within the delay: the grant lives on
AUD_SAFE = 6       # a lease was lost: the grant ended and the resource was driven safe
AUD_HOLD = 7       # a lease was lost: the grant ended, the resource kept its state (CFG_LINK_LOSS_HOLD)
AUDIT_KINDS = {AUD_GRANT: "grant", AUD_END: "end", AUD_HANDOVER: "handover", AUD_DELAY: "failsafe_delay",
               AUD_RESUMED: "resumed", AUD_SAFE: "failsafe_safe", AUD_HOLD: "failsafe_hold"}

SIZES = {"B": 1, "H": 2, "I": 4, "s": 0, "N": 8, "K": 4}
RAW = {"N", "K"}   # fixed-size byte strings, not integers

ID = {}        # name -> id
NAME = {}      # id -> name
FIELDS = {}    # id -> ((field, type), ...)
OFFSETS = {}   # name -> {field: offset}
FIXED = {}     # id -> fixed payload size (without the "s" tail)
HAS_TAIL = {}  # id -> whether the last field is "s"


def _build():
    for name, mid, fields in TABLE:
        if mid in NAME:
            raise ValueError("duplicate message id 0x%02x" % mid)
        ID[name] = mid
        NAME[mid] = name
        FIELDS[mid] = fields
        off = 0
        offs = {}
        tail = False
        for i, (fname, ftype) in enumerate(fields):
            if ftype == "s" and i != len(fields) - 1:
                raise ValueError("%s: 's' must be the last field" % name)
            offs[fname] = off
            off += SIZES[ftype]
            tail = ftype == "s"
        OFFSETS[name] = offs
        FIXED[mid] = off
        HAS_TAIL[mid] = tail


_build()


def is_request(mid):
    return 0x01 <= mid <= 0x3F


def is_event(mid):
    return 0x40 <= mid <= 0x7F


def response_id(mid):
    return mid | 0x80
