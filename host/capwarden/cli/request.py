"""`capwarden request`: act as a runtime from the shell."""

import asyncio
import json
import os

from capwarden.cli._common import err, formatter

HELP = """\
Talk to a running engine as a runtime: acquire a resource and hold it (heartbeating) for
--hold seconds, release one of your sessions, or list them. The token comes from --token or the
CAPWARDEN_TOKEN environment variable (so it stays out of shell history). Exit codes: 0 granted
or done, 1 denied, 2 usage error or no engine.

examples:
  CAPWARDEN_TOKEN=s3cret capwarden request --url ws://127.0.0.1:8765/cap/v1 --runtime rt1 \\
      acquire --fay fay:0192... --resource terminal:0192.../sim/gps --mode read --descriptor-id 0192... --hold 10
  CAPWARDEN_TOKEN=s3cret capwarden request --url ws://127.0.0.1:8765/cap/v1 --runtime rt1 sessions
  CAPWARDEN_TOKEN=s3cret capwarden request --url unix:/run/capwarden.sock --runtime rt1 release SESSION_ID
"""


def register(sub):
    p = sub.add_parser("request", help="talk to a running engine as a runtime", description=HELP,
                       formatter_class=formatter())
    p.add_argument("--url", required=True, help="the engine's ws:// or wss:// URL, or unix:PATH")
    p.add_argument("--runtime", required=True, help="your runtime id")
    p.add_argument("--token", default=None, help="your token (default: $CAPWARDEN_TOKEN)")
    p.add_argument("--cafile", default=None, help="trust this certificate (wss:// with a private CA)")
    p.add_argument("--json", action="store_true", help="print each answer as one JSON object")
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
    r = s.add_parser("release", help="SessionRelease: end one of your sessions", formatter_class=formatter())
    r.add_argument("session_id")
    r.set_defaults(func=main)
    q = s.add_parser("sessions", help="SessionQuery: list your sessions", formatter_class=formatter())
    q.set_defaults(func=main)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def main(args):
    from capwarden.errors import UsageError

    token = args.token or os.environ.get("CAPWARDEN_TOKEN")
    if not token:
        raise UsageError("no token: give --token or set CAPWARDEN_TOKEN")
    return asyncio.run(_run(args, token))


async def _run(args, token):
    import ssl

    from capwarden.errors import CapError, UsageError
    from capwarden.sdk import connect

    unix = args.url[len("unix:"):] if args.url.startswith("unix:") else None
    ctx = ssl.create_default_context(cafile=args.cafile) if args.url.startswith("wss:") else None
    try:
        client = await connect(None if unix else args.url, args.runtime, token, ssl=ctx, unix_path=unix)
    except Exception as exc:   # never echo the token: only the URL and the reason
        raise UsageError("cannot connect to %s as %s: %s" % (args.url, args.runtime, exc)) from None

    def show(obj, text):
        print(json.dumps(obj, sort_keys=True) if args.json else text, flush=True)

    try:
        if args.request_command == "sessions":
            listed = await client.request("SessionQuery", {})
            show(listed, json.dumps(listed, indent=1))
            return 0
        if args.request_command == "release":
            try:
                done = await client.request("SessionRelease", {"session_id": args.session_id})
            except CapError as exc:
                show({"released": False, "error_code": exc.code, "error_message": exc.message},
                     "refused: %s: %s" % (exc.code, exc.message))
                return 1
            show({"released": True, "session_id": done["session_id"]}, "released %s" % done["session_id"])
            return 0
        return await _acquire(args, client, show)
    finally:
        await client.close()


async def _acquire(args, client, show):
    from capwarden.errors import CapError

    if args.ticket:
        from capwarden.cli._common import LINE_END, read_input
        from capwarden.credentials.jws import MAX_TICKET

        try:
            raw = read_input(args.ticket, "ticket", MAX_TICKET + LINE_END, "E_TICKET_MALFORMED")
        except CapError as exc:   # an oversize file is refused here, as the engine would
            show({"granted": False, "error_code": exc.code, "error_message": exc.message},
                 "denied: %s: %s" % (exc.code, exc.message))
            return 1
        cred = {"type": "ticket", "ticket": raw.decode("ascii", "replace").strip()}
    else:
        cred = {"type": "descriptor_ref", "descriptor_id": args.descriptor_id}
    try:
        s = await client.acquire(args.fay, args.resource, args.mode, cred, args.wait_ms)
    except CapError as exc:
        show({"granted": False, "error_code": exc.code, "error_message": exc.message},
             "denied: %s: %s" % (exc.code, exc.message))
        return 1
    show({"granted": True, "error_code": None, "session_id": s.session_id, "granted_modes": s.granted_modes,
          "expires_at": s.expires_at, "heartbeat_interval_ms": s.interval_ms, "heartbeat_timeout_ms": s.timeout_ms},
         "granted: session %s (heartbeat every %d ms)" % (s.session_id, s.interval_ms))
    s.on_change(lambda c: err("session %s: %s (%s)" % (c["session_id"], c["state"], c["reason"])))
    loop = asyncio.get_running_loop()
    end = loop.time() + args.hold
    while loop.time() < end and s.state == "active":
        await s.heartbeat()
        await asyncio.sleep(min(s.interval_ms / 1000.0, max(0.0, end - loop.time())))
    if s.state == "active":
        await s.release()
        if not args.json:
            print("released")
    return 0
