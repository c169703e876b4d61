"""`capwarden request`: act as a runtime from the shell."""

import asyncio
import os
import signal

from capwarden.cli._common import (needs_action, EXIT_DENIED, EXIT_INTERRUPTED, EXIT_OK, add_json, err, formatter, int_range,
                                   nonneg_float, print_json)

HELP = """\
Talk to a running engine as a runtime: acquire a resource and hold it (heartbeating) for
--hold seconds, release one of your sessions, or list them. The token comes from --token or the
CAPWARDEN_TOKEN environment variable (so it stays out of shell history). --resource takes a
Resource_ID or the board shorthand BOARD/NAME (sim/gps), under the engine's terminal.
Exit codes: 0 granted or done (a held session released at the end), 1 denied, refused token,
no engine, or a held session ended by the engine; 2 usage error; 130 Ctrl-C (the held
session is released first).

examples:
  export CAPWARDEN_TOKEN=s3cret-token       # as given to 'capwarden serve --runtime-token rt1=...'
  capwarden request --url ws://127.0.0.1:8765/cap/v1 --runtime rt1 \\
      acquire --fay "$FAY" --resource sim/gps --mode read --descriptor-id 0192a1b2-... --hold 10
  capwarden request --url ws://127.0.0.1:8765/cap/v1 --runtime rt1 sessions
  capwarden request --url unix:/run/capwarden.sock --runtime rt1 release SESSION_ID --json
"""

MODES = ["read", "write", "execute", "configure"]


def register(sub):
    p = sub.add_parser("request", help="talk to a running engine as a runtime", description=HELP,
                       formatter_class=formatter())
    p.add_argument("--url", required=True, help="the engine's ws:// or wss:// URL, or unix:PATH")
    p.add_argument("--runtime", required=True, help="your runtime id")
    p.add_argument("--token", default=None, help="your token (default: $CAPWARDEN_TOKEN)")
    p.add_argument("--cafile", default=None, help="trust this certificate (wss:// with a private CA)")
    add_json(p, "print one JSON object (also on failure)")
    s = p.add_subparsers(dest="request_command", metavar="ACTION")
    a = s.add_parser("acquire", help="AuthRequest, then hold the session", description=HELP,
                     formatter_class=formatter())
    a.add_argument("--fay", required=True, help="the Fay_ID you act for")
    a.add_argument("--resource", required=True, metavar="RESOURCE_ID",
                   help="TERMINAL_ID/BOARD/NAME, or BOARD/NAME (e.g. sim/gps) on the engine's terminal")
    a.add_argument("--mode", required=True, choices=MODES)
    c = a.add_mutually_exclusive_group(required=True)
    c.add_argument("--descriptor-id", help="a descriptor stored on the engine's terminal")
    c.add_argument("--ticket", metavar="FILE", help="a ticket file (JWS compact)")
    a.add_argument("--wait-ms", type=int_range(0, 3_600_000, "--wait-ms"), default=0,
                   help="wait this long for a busy resource (default 0: fail at once)")
    a.add_argument("--hold", type=nonneg_float("--hold"), default=0,
                   help="seconds to hold the session, heartbeating, then release it (default 0)")
    add_json(a, "print one JSON object (also on failure)", inherited=True)
    a.set_defaults(func=main)
    r = s.add_parser("release", help="SessionRelease: end one of your sessions", description=HELP,
                     formatter_class=formatter())
    r.add_argument("session_id")
    add_json(r, "print one JSON object (also on failure)", inherited=True)
    r.set_defaults(func=main)
    q = s.add_parser("sessions", help="SessionQuery: list your sessions", description=HELP,
                     formatter_class=formatter())
    add_json(q, "print one JSON object (also on failure)", inherited=True)
    q.set_defaults(func=main)
    p.set_defaults(func=needs_action(p))


def main(args):
    from capwarden.cli._common import check_id, check_input
    from capwarden.cli.serve import token_ok
    from capwarden.errors import UsageError

    token = args.token or os.environ.get("CAPWARDEN_TOKEN")
    if not token:
        raise UsageError("no token: give --token or set CAPWARDEN_TOKEN")
    if not token_ok(token):
        raise UsageError("the token holds a space, a line break or another character a token never has "
                         "(it is not shown)")
    if not args.url.startswith(("ws://", "wss://", "unix:")) or args.url in ("unix:", "ws://", "wss://"):
        raise UsageError("--url takes ws://HOST:PORT/cap/v1, wss://HOST:PORT/cap/v1 or unix:PATH (got %r)"
                         % args.url[:80])
    if not args.url.startswith("unix:"):
        from urllib.parse import urlsplit

        try:
            urlsplit(args.url).port          # a port out of range raises here, not in the SDK
        except ValueError as exc:
            raise UsageError("--url %r: %s" % (args.url[:80], exc)) from None
    if args.cafile:
        check_input(args.cafile, "certificate", "--cafile")
    if args.request_command == "acquire":
        check_id(args.fay, "fay", "--fay")
        if args.ticket:
            check_input(args.ticket, "ticket", "--ticket")   # before connecting
    return asyncio.run(_run(args, token))


def connect_error(url, runtime, exc, token):
    """What went wrong connecting, in words that never include the token (exit 1)."""
    from capwarden.errors import CapwardenError

    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        why = "the engine refused the token for this runtime (HTTP 401): check --token or CAPWARDEN_TOKEN"
    elif status is not None:
        why = "the engine answered HTTP %d (is the path /cap/v1?)" % status
    elif isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        why = "nothing listens there (is 'capwarden serve' running?)"
    elif isinstance(exc, FileNotFoundError) or "no such file" in str(exc).lower():
        why = "no such socket (is 'capwarden serve' running?)"
    elif isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        why = "the engine did not answer in time"
    elif isinstance(exc, CapwardenError):
        why = str(exc)          # the SDK's own words (EngineUnreachable): they never hold the token
    elif isinstance(exc, OSError):
        why = exc.strerror or exc.__class__.__name__
    else:
        why = exc.__class__.__name__     # its text may quote our own request headers
    return CapwardenError("cannot connect to %s as %s: %s" % (url[:120], runtime, why.replace(token, "***")))


async def _run(args, token):
    import ssl

    from capwarden.errors import CapError, CapwardenError
    from capwarden.sdk import connect

    unix = args.url[len("unix:"):] if args.url.startswith("unix:") else None
    try:
        ctx = ssl.create_default_context(cafile=args.cafile) if args.url.startswith("wss:") else None
    except (ssl.SSLError, ValueError) as exc:
        from capwarden.cli._common import InputError

        raise InputError("--cafile %s is not a PEM certificate (%s)" % (args.cafile, exc.__class__.__name__)) from None
    try:
        client = await asyncio.wait_for(connect(None if unix else args.url, args.runtime, token, ssl=ctx,
                                                unix_path=unix), 30)
    except (CapwardenError, TimeoutError) as exc:   # never echo the token: only the URL and the reason
        raise connect_error(args.url, args.runtime, exc, token) from None

    def show(obj, text):
        if args.json:
            print_json(obj)
        else:
            print(text, flush=True)

    try:
        if args.request_command == "sessions":
            return await _sessions(client, show)
        if args.request_command == "release":
            try:
                done = await client.request("SessionRelease", {"session_id": args.session_id})
            except CapError as exc:
                show({"released": False, "error_code": exc.code, "error_message": exc.message},
                     "refused: %s: %s" % (exc.code, exc.message))
                return EXIT_DENIED
            show({"released": True, "error_code": None, "session_id": done["session_id"]},
                 "released %s" % done["session_id"])
            return EXIT_OK
        return await _acquire(args, client, show)
    finally:
        await client.close()


async def _sessions(client, show):
    from capwarden.cli._common import human_time

    listed = await client.request("SessionQuery", {})
    sessions = listed.get("sessions", [])
    lines = ["%d session(s)" % len(sessions)]
    for x in sessions:
        lines.append("%s  %-16s%s %-9s %s  %s" % (x.get("session_id"), x.get("state"),
                                                  " (suspended)" if x.get("suspended") else "",
                                                  x.get("access_mode"), x.get("resource_id"), x.get("fay_id")))
        if x.get("expires_at"):
            lines.append("    credential ends %s" % human_time(x["expires_at"]))
    show(dict(listed, error_code=None), "\n".join(lines))
    return EXIT_OK


async def _acquire(args, client, show):
    from capwarden.cli._common import LINE_END, human_time, read_input, resource_arg
    from capwarden.errors import CapError, CapwardenError

    def denied(code, message):
        show({"granted": False, "error_code": code, "error_message": message},
             "denied: %s: %s" % (code, message))
        return EXIT_DENIED

    if args.ticket:
        from capwarden.credentials.jws import MAX_TICKET

        try:
            raw = read_input(args.ticket, "ticket", MAX_TICKET + LINE_END, "E_TICKET_MALFORMED")
        except CapError as exc:   # an oversize file is refused here, as the engine would
            return denied(exc.code, exc.message)
        cred = {"type": "ticket", "ticket": raw.decode("ascii", "replace").strip()}
    else:
        cred = {"type": "descriptor_ref", "descriptor_id": args.descriptor_id}
    resource = args.resource
    if not resource.startswith("terminal:"):
        # The board shorthand: the engine's terminal is the sender of its every answer.
        terminal = (await client.request("SessionQuery", {}, raw=True)).get("sender_id")
        resource = resource_arg(resource, terminal)
    try:
        s = await client.acquire(args.fay, resource, args.mode, cred, args.wait_ms)
    except CapError as exc:
        return denied(exc.code, exc.message)
    show({"granted": True, "error_code": None, "session_id": s.session_id, "resource_id": resource,
          "granted_modes": s.granted_modes, "expires_at": s.expires_at, "heartbeat_interval_ms": s.interval_ms,
          "heartbeat_timeout_ms": s.timeout_ms, "held_s": args.hold},
         "granted: session %s on %s (heartbeat every %d ms, credential ends %s)" % (
             s.session_id, resource, s.interval_ms, human_time(s.expires_at)))
    ended = []

    def changed(c):
        if c.get("state") not in ("active", "handover_pending"):
            ended.append(c)
        err("session %s: %s (%s)" % (c.get("session_id"), c.get("state"), c.get("reason")))

    s.on_change(changed)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        end = loop.time() + args.hold
        while loop.time() < end and s.state == "active" and not interrupted.is_set():
            try:
                await s.heartbeat()
            except CapError as exc:
                ended.append({"reason": exc.code})     # the engine no longer knows it: said below
                break
            try:
                await asyncio.wait_for(interrupted.wait(), min(s.interval_ms / 1000.0, max(0.0, end - loop.time())))
            except asyncio.TimeoutError:
                pass
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if s.state == "active" and not ended:
        try:
            await s.release()
        except CapError as exc:
            raise CapwardenError("could not release session %s: %s" % (s.session_id, exc)) from None
        if interrupted.is_set():
            err("capwarden request: interrupted; released session %s" % s.session_id)
            return EXIT_INTERRUPTED
        if not args.json:
            print("released %s" % s.session_id)
        return EXIT_OK
    # Ended by the engine while held (revoked, expired, board lost, handed over): not what was asked.
    reason = ended[-1].get("reason") if ended else s.state
    err("capwarden request: session %s ended while held: %s" % (s.session_id, reason))
    return EXIT_INTERRUPTED if interrupted.is_set() else EXIT_DENIED
