"""Protocol constants and limits shared by host and device. One source of truth.

Sizes are chosen so that one worst-case frame fits the smallest input buffer we target
(RP2040 USB CDC and ESP32 UART: 256 bytes), see docs/protocol.md "Frame sizes".
"""

PROTOCOL_VERSION = 4   # 4: HEARTBEAT_R override; 3: every frame authenticated (issue 12); 2: HELLO_R hb_seq and rid_hw (issue 9)

# A raw frame is header + payload + auth trailer + CRC, before COBS and escaping.
HEADER_SIZE = 4          # seq (u8), message id (u8), request id (u16, little-endian)
CRC_SIZE = 2             # CRC-16/CCITT-FALSE, big-endian, over everything before it
AUTH_SIZE = 12           # counter (u32 LE) and 8-byte tag after the payload (docs/link-auth.md)
# Largest raw frame: 128 with the auth trailer (issue 12), so that payloads keep 110 bytes (a
# 100-byte ACTUATE argument, as hil/test_device_faults.py writes to the SD card). The worst
# case on the wire, every byte escaped, is then 259 bytes, 3 over a 256-byte input buffer; any
# frame with fewer than 127 bytes that need escaping (0x03, 0x1B) fits. docs/link-auth.md.
MAX_RAW = 128
MAX_PAYLOAD = MAX_RAW - HEADER_SIZE - AUTH_SIZE - CRC_SIZE   # 110
MIN_RAW = HEADER_SIZE + CRC_SIZE
# COBS adds one byte per 254 and one more; escaping at most doubles; one delimiter.
MAX_COBS = MAX_RAW + MAX_RAW // 254 + 1          # 129
MAX_WIRE = 2 * MAX_COBS + 1                      # 259: worst case, every byte escaped

DELIMITER = 0x00
# 0x03 is Ctrl-C: on a board's USB REPL it raises KeyboardInterrupt. It never appears inside
# a frame; ESC-stuffing replaces it (and ESC itself) by ESC, byte ^ ESC_XOR. A bare 0x03 on
# the line means "stop the agent and go back to the REPL" (docs/protocol.md "Way back").
CTRL_C = 0x03
ESC = 0x1B
ESC_XOR = 0x20

# Receive buffer the host assumes until the device announces its own (bytes).
DEFAULT_RX_BUFFER = 256

# Request ids: 0 marks an unsolicited device frame (event, announce); hosts use 1..65535.
RID_NONE = 0
RID_MAX = 0xFFFF

# u32 fields carry values below 2**30 so that they stay MicroPython small ints on 32-bit
# boards (no heap allocation when the device reads them). Hosts check before sending.
U32_LIMIT = 1 << 30
U32_MASK = U32_LIMIT - 1   # a counter or clock sent as a u32 is taken modulo U32_LIMIT

# Access modes, as a bit set. Modes never imply each other (S2).
MODE_READ = 0x01
MODE_WRITE = 0x02
MODE_EXECUTE = 0x04
MODE_CONFIGURE = 0x08
MODES_EXCLUSIVE = MODE_WRITE | MODE_EXECUTE | MODE_CONFIGURE
MODES_ALL = MODE_READ | MODES_EXCLUSIVE

# Resource states, as announced by RES_INFO_R and EV_RESOURCE.
RES_ABSENT = 0
RES_PRESENT = 1
RES_FAULT = 2

# Resource classes (RES_INFO_R.cls): a board description gives each resource one. capshared.names
# derives CLASSES (the host's names) from these, so a new class is one line here.
CLS_OTHER = 0
CLS_CAMERA = 1
CLS_MOTOR = 2
CLS_GPS = 3
CLS_STORAGE = 4
CLS_SENSOR = 5
CLS_LED = 6

# Why a grant ended or a resource changed (the reason byte of EV_GRANT_ENDED, EV_RESOURCE and
# EV_FAILSAFE, and of audit ring entries). capshared.names derives REASONS from these.
R_NONE = 0
R_RELEASED = 1          # the holder released it
R_LEASE_EXPIRED = 2     # the host went silent past the lease
R_REMOVED = 3           # the resource was unplugged
R_FAULT = 4             # the driver reported a fault
R_HANDOVER = 5          # moved to another session
R_FAILSAFE = 6          # failsafe drove the resource to its safe state
R_SESSION_ENDED = 7     # the host ended the session
R_REBOOT = 8            # the agent restarted
R_REPLUGGED = 9         # the resource came back
R_WATCHDOG = 10         # the supervisor found the agent unhealthy
R_OVERRIDE = 11         # the board's manual override took it (a human's direct control, EV_OVERRIDE)

# The longest lease a board grants (ACQUIRE, HANDOVER lease_ms); a longer one is refused. The
# host checks it before sending.
MAX_LEASE_MS = 3600000

import sys  # noqa: E402

if sys.implementation.name != "micropython":
    def __getattr__(name):
        # The host-only names (CLASSES, REASONS, mode_bits, ...) live in capshared.names, which
        # imports this module; read from here they are looked up there on first use, so neither
        # module needs the other to load first. Code should import them from capshared.names.
        from capshared import names

        try:
            return getattr(names, name)
        except AttributeError:
            raise AttributeError("module 'capshared.limits' has no attribute %r" % (name,)) from None
