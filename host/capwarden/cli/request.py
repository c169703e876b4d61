"""`capwarden request`: act as a runtime from the shell."""

import asyncio
import json
import os

from capwarden.cli._common import err, formatter

HELP = """\
Send one request to a running engine as a runtime: acquire a resource and hold it (with
heartbeats) for --hold seconds, or list your sessions. The token comes from --token or the
CAPWARDEN_TOKEN environment variable (so it stays out of shell history).

examples:
  CAPWARDEN_TOKEN=s3cret capwarden request --url ws://127.0.0.1:8765/cap/v1 --runtime rt1 \\
      acquire --fay fay:0192... --resource terminal:0192.../sim/gps --mode read --descriptor-id 0192... --hold 10
  CAPWARDEN_TOKEN=s3cret capwarden request --url ws://127.0.0.1:8765/cap/v1 --runtime rt1 sessions
"""


def register(sub):
    p = sub.add_parser("request", help="talk to a running engine as a runtime", description=HELP,
                       formatter_class=formatter())
    p.add_argument("--url", required=True, help="the engine's ws:// or wss:// URL")
    p.add_argument("--runtime", required=True, help="your runtime id")
    p.add_argument("--token", default=None, help="your token (default: $CAPWARDEN_TOKEN)")
    s = p.add_subparsers(dest="request_command", metavar="ACTION")
    a = s.add_parser("acquire", help="AuthRequest, then hold the session", formatter_class=formatter())
    a.add_argument("--fay", required=True)
    a.add_argument("--resource", required=True)
    a.add_argument("--mode", required=True, choices=["read", "write", "execute", "configure"])
    c = a.add_mutually_exclusive_group(required=True)
    c.add_argument("--descriptor-id")
    c.add_argument("--ticket", metavar="FILE")
    a.add_argument("--wait-ms", type=int, default=0)
    a.add_argument("--hold", type=float, default=0, help="seconds to hold the session, heartbeating (default 0)")
    a.set_defaults(func=main)
    q = s.add_parser("sessions", help="SessionQuery: list your sessions", formatter_class=formatter())
    q.set_defaults(func=main)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def main(args):
    from capwarden.errors import CapError, UsageError
    from capwarden.sdk import connect

    token = args.token or os.environ.get("CAPWARDEN_TOKEN")
    if not token:
        raise UsageError("no token: give --token or set CAPWARDEN_TOKEN")

    async def go():
        try:
            client = await connect(args.url, args.runtime, token)
        except Exception as exc:
            raise UsageError("cannot connect to %s: %s" % (args.url, exc)) from None
        try:
            if args.request_command == "sessions":
                print(json.dumps(await client.request("SessionQuery", {}), indent=1))
                return 0
            if args.ticket:
                with open(args.ticket) as f:
                    cred = {"type": "ticket", "ticket": f.read().strip()}
            else:
                cred = {"type": "descriptor_ref", "descriptor_id": args.descriptor_id}
            try:
                s = await client.acquire(args.fay, args.resource, args.mode, cred, args.wait_ms)
            except CapError as exc:
                print("denied: %s: %s" % (exc.code, exc.message))
                return 1
            print("granted: session %s (heartbeat every %d ms)" % (s.session_id, s.interval_ms), flush=True)
            s.on_change(lambda c: err("session %s: %s (%s)" % (c["session_id"], c["state"], c["reason"])))
            end = asyncio.get_running_loop().time() + args.hold
            while asyncio.get_running_loop().time() < end and s.state == "active":
                await s.heartbeat()
                await asyncio.sleep(s.interval_ms / 1000.0)
            if s.state == "active":
                await s.release()
                print("released")
            return 0
        finally:
            await client.close()

    return asyncio.run(go())
