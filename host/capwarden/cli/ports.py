"""`capwarden ports`: the serial ports, with the boards we support first."""

from capwarden.cli._common import add_json, formatter, print_json

HELP = """\
List the serial ports (pyserial's list_ports) with their USB VID:PID; ports whose USB id belongs
to a board capwarden supports (RP2040 2e8a, Espressif 303a, the CP210x/CH340/CH9102/FTDI bridges
of ESP32 boards) come first and are marked. '--port auto' in ping and serve picks the one such
port. A port that answers nothing has no CAP agent yet: 'capwarden flash --port PORT --board NAME'.

examples:
  capwarden ports
  capwarden ports --json
  capwarden ping --port auto
"""


def register(sub):
    p = sub.add_parser("ports", help="list serial ports, supported boards first", description=HELP,
                       formatter_class=formatter())
    add_json(p)
    p.set_defaults(func=main)


def main(args):
    from capwarden.link.transport import list_ports

    ports = list_ports()
    if args.json:
        print_json({"ports": ports})
        return 0
    if not ports:
        print("no serial ports found (is the board plugged in? on Linux, is your user in the 'dialout' group?)")
        return 0
    print("  %-22s %-10s %s" % ("DEVICE", "USB", "BOARD OR DESCRIPTION"))
    for p in ports:
        mark = "*" if p["supported"] else " "
        print("%s %-22s %-10s %s" % (mark, p["device"], p["usb"] or "-", p["supported"] or p["description"]))
    if any(p["supported"] for p in ports):
        print("* a board capwarden supports; use it with --port DEVICE (or --port auto)")
    return 0
