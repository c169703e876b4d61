"""`capwarden serve`: run the Protocol_Engine for runtimes, against boards."""

import asyncio
import os
import signal

from capwarden.cli._common import (EXIT_INTERRUPTED, EXIT_OK, add_json, add_store, check_output, check_store, err,
                                   formatter, heap_size, int_range, listen_address, print_json, store_path)
from capwarden.cli.logsetup import add_verbosity
from capwarden.engine.config import MAX_BUSY_LIMIT_MS

HELP = """\
Run the Protocol_Engine: the runtime API (cap-supplement S3) over WebSocket at /cap/v1, in
front of the virtual board (--board sim) or real boards (--port, repeatable). Runtimes
authenticate with 'Authorization: Bearer TOKEN'. Plain ws:// only on loopback or a Unix
socket; elsewhere give --tls-cert and --tls-key. Resources appear as TERMINAL_ID/BOARD/NAME;
the served ones are listed at start. A token is 8 or more printable characters, no spaces.
Logs go to stderr, one line per event (connections, refusals, boards); -v adds every request,
-q keeps only warnings. Ctrl-C stops it (exit 130), SIGTERM too (exit 0).

examples:
  capwarden serve --store ./store --listen 127.0.0.1:8765 --board sim --runtime-token rt1=s3cret-token
  capwarden serve --store ./store --listen 0.0.0.0:8765 --port auto \\
      --tls-cert cert.pem --tls-key key.pem --config ./engine.json --liveness motor=500/2000
  capwarden serve --store ./store --listen 127.0.0.1:8765 --board sim --runtime-token rt1=s3cret-token \\
      --board-setting failsafe_ms=2000 --board-setting link_loss_hold=led -v

The config file (mode 600) keeps tokens out of the process list:
  {"runtimes": {"rt1": {"token": "s3cret-token", "fays": ["fay:0192..."]}},
   "liveness": {"motor": "500/2000"}, "leeway": 60, "board": {"failsafe_ms": 2000}}
"""


def register(sub):
    p = sub.add_parser("serve", help="run the engine and its runtime API", description=HELP,
                       formatter_class=formatter())
    add_store(p)
    p.add_argument("--listen", required=True, type=listen_address, metavar="HOST:PORT",
                   help="HOST:PORT (port 0..65535, 0 for any free one), or unix:PATH")
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--board", choices=["sim"], help="start the virtual board")
    b.add_argument("--port", action="append", metavar="DEVICE",
                   help="a board's serial port or pyserial URL, or 'auto' (see 'capwarden ports'); repeatable")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="runtimes (tokens, Fays), liveness, leeway, max_busy_ms and board settings as JSON, owner-readable only (default "
                        "STORE/engine.json when it exists); keeps tokens out of the process list")
    p.add_argument("--runtime-token", action="append", default=[], metavar="ID=TOKEN", help="a runtime and its token")
    p.add_argument("--runtime-fays", action="append", default=[], metavar="ID=FAY[,FAY...]",
                   help="the Fays a runtime may act for (recommended; without it a runtime may act for any "
                        "Fay whose credential it presents)")
    p.add_argument("--tls-cert", default=None, metavar="PEM", help="the server's certificate chain (PEM)")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="its private key (PEM)")
    p.add_argument("--audit", default=None, metavar="FILE", help="audit log (default STORE/audit.log)")
    p.add_argument("--liveness", action="append", default=[], metavar="CLASS=INTERVAL_MS/TIMEOUT_MS",
                   help="heartbeat interval and timeout for a resource class (default 1000/5000)")
    p.add_argument("--leeway", type=int_range(0, 300, "--leeway"), default=None, metavar="SECONDS",
                   help="clock-skew leeway for credential validity, 0..300 (default 60, as in verify); sessions "
                        "end when a fresh request would be refused")
    p.add_argument("--max-busy-ms", type=int_range(0, MAX_BUSY_LIMIT_MS, "--max-busy-ms"), default=None, metavar="MS",
                   help="the longest busy marker a runtime's heartbeat may set, 0..%d (default 60000, or "
                        "\"max_busy_ms\" in the config file): a session in a long healthy operation is not "
                        "suspended for that long" % MAX_BUSY_LIMIT_MS)
    p.add_argument("--board-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting given to every board at start and after a reset: failsafe_ms (no grant "
                        "outlives that much host silence), failsafe_delay_ms (a lost lease waits that long for a "
                        "heartbeat first, at most 30000), lock_delay_ms (safe hold after a lost holder), "
                        "link_loss_hold=NAME[,NAME] (resources that keep their state on link loss; the rest go safe)")
    p.add_argument("--trust", default=None, metavar="URL",
                   help="the trust service (https://, or http:// on loopback): key sets, revocations pushed and "
                        "polled, online/degraded mode; its thresholds and the revocation query in the config "
                        "file's \"trust\" section (docs/engine.md, Online and offline)")
    p.add_argument("--console", default=None, metavar="HOST:PORT",
                   help="also serve the operator console (a web page: docs/console.md) there; plain HTTP only on "
                        "loopback, elsewhere over TLS with --tls-cert and --tls-key. Operators: capwarden operator add")
    p.add_argument("--heapsize", type=heap_size, default=None, help="virtual board heap, e.g. 64K (with --board sim)")
    add_json(p, "print one JSON object when serving starts (url, terminal, resources), or on failure")
    add_verbosity(p)
    p.set_defaults(func=main)


def parse_tokens(items):
    from capwarden.errors import UsageError

    tokens = {}
    for it in items:
        rid, sep, tok = it.partition("=")
        if not sep or not rid or len(tok) < 8 or not token_ok(tok):
            # Never the token itself in the message: it may be a real one, mistyped.
            raise UsageError("--runtime-token takes RUNTIME_ID=TOKEN with a token of 8 or more printable "
                             "characters and no spaces, e.g. rt1=s3cret-token%s" % (
                                 " (runtime %r)" % rid if sep and rid and token_ok(rid) else ""))
        if rid in tokens:
            raise UsageError("--runtime-token: runtime %r is given twice; give each runtime one token" % rid)
        tokens[rid] = tok
    return tokens


def token_ok(text):
    """A token goes in an HTTP header: printable ASCII without spaces (no line break to inject)."""
    return bool(text) and all(33 <= ord(c) <= 126 for c in text)


def check_tokens(tokens):
    from capwarden.errors import UsageError

    seen = {}
    for rid, tok in tokens.items():
        if not token_ok(tok):
            raise UsageError("runtime %r: its token must be printable characters without spaces" % rid)
        if tok in seen:
            raise UsageError("runtimes %r and %r have the same token: each runtime needs its own, or the engine "
                             "cannot tell them apart" % (seen[tok], rid))
        seen[tok] = rid


def parse_bindings(items, tokens, out=None):
    from capwarden.credentials.ids import FAY_RE
    from capwarden.errors import UsageError

    out = {rid: set(fays) for rid, fays in (out or {}).items()}
    for rid, fays in out.items():
        if rid not in tokens or not all(FAY_RE.match(f) for f in fays):
            raise UsageError("the config file binds %r to Fays, but it has no token or a Fay id is malformed" % rid)
    for it in items:
        rid, sep, fays = it.partition("=")
        names = [f.strip() for f in fays.split(",") if f.strip()]
        if not sep or rid not in tokens or not names or not all(FAY_RE.match(f) for f in names):
            raise UsageError("--runtime-fays takes RUNTIME_ID=FAY[,FAY...] for a runtime given --runtime-token "
                             "(got %r)" % it)
        out.setdefault(rid, set()).update(names)
    return out


def main(args):
    from capwarden.cli.logsetup import configure
    from capwarden.engine import boardconfig, config, online
    from capwarden.engine.app import EngineApp
    from capwarden.engine.liveness import MAX_BUSY_MS, LivenessPolicy
    from capwarden.errors import UsageError
    from capwarden.link.transport import resolve_port

    configure(args.verbosity)
    # Every argument is checked here, before the slow work (a board's deployment).
    store = check_store(store_path(args))
    path = args.config or os.path.join(store, "engine.json")
    conf = config.load(path) if args.config or os.path.exists(path) else config.empty()
    tokens, bindings, live, leeway, board = conf.tokens, conf.bindings, conf.liveness, conf.leeway, conf.board
    board.update(boardconfig.parse_items(args.board_setting))
    for rid, tok in parse_tokens(args.runtime_token).items():
        tokens[rid] = tok            # the command line adds to the config file (and overrides a runtime's token)
    check_tokens(tokens)
    leeway = args.leeway if args.leeway is not None else (60 if leeway is None else leeway)
    try:
        liveness = LivenessPolicy.parse(live + args.liveness)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not 0 <= leeway <= 300:
        raise UsageError("--leeway must be 0..300 seconds")
    max_busy = args.max_busy_ms if args.max_busy_ms is not None else (
        MAX_BUSY_MS if conf.max_busy_ms is None else conf.max_busy_ms)
    if args.heapsize and args.board != "sim":
        raise UsageError("--heapsize is for the virtual board (--board sim)")
    if len(set(args.port or ())) != len(args.port or ()):
        raise UsageError("--port: the same port is given twice")
    if args.audit:
        check_output(args.audit, "the audit log", "--audit")
    if args.console:
        from capwarden.engine.console.server import ConsoleServer

        ConsoleServer(args.console, args.tls_cert, args.tls_key)     # its address and TLS rule, checked now
    ports = [resolve_port(p) for p in args.port or ()]
    app = EngineApp(store, args.listen, tokens, sim=args.board == "sim",
                    fay_bindings=parse_bindings(args.runtime_fays, tokens, bindings),
                    ports=ports, audit_path=args.audit, liveness=liveness, tls_cert=args.tls_cert,
                    tls_key=args.tls_key, heapsize=args.heapsize, progress=None if args.json else err,
                    leeway=leeway, max_busy_ms=max_busy, board_settings=board,
                    trust=online.with_url(conf.trust, args.trust) if args.trust else conf.trust,
                    handover=conf.handover, console=args.console, conversion=conf.conversion)
    how = {}

    async def run():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(sig):
            how.setdefault("signal", sig)
            stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        started = asyncio.ensure_future(app.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({started, stopping}, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.05)       # a signal that arrived during a blocking step is handled now
        if "signal" in how:
            # Stopped while starting (Ctrl-C during the board's deployment): whatever the start
            # said then (a child killed by the same Ctrl-C) is not the news; the interrupt is.
            started.cancel()
            await asyncio.gather(started, return_exceptions=True)
            await app.stop()
            return
        stopping.cancel()
        started.result()                # a failed start raises here (app.start stopped what it started)
        report_start(args, app)
        try:
            await stop.wait()
        finally:
            await app.stop()

    asyncio.run(run())
    if how.get("signal") == signal.SIGINT:
        err("capwarden serve: interrupted; stopped")
        return EXIT_INTERRUPTED
    return EXIT_OK


def report_start(args, app):
    resources = app.resource_ids()
    if args.json:
        print_json(dict({"serving": True, "url": app.server.url, "terminal_id": app.engine.terminal_id,
                    "boards": {n: {"agent_version": b.info.agent_version, "resources": len(b.info.resources)}
                               for n, b in app.boards.items()},
                    "resources": [{"resource_id": rid, "board": n, "class": r.cls, "modes": list(r.modes)}
                                  for n, rid, r in resources]},
                        **({"console": app.console_server.url} if app.console_server else {})))
        return
    print("serving %s for terminal %s" % (app.server.url, app.engine.terminal_id), flush=True)
    for n, b in app.boards.items():
        print("board %s (agent %s), %d resources:" % (n, b.info.agent_version, len(b.info.resources)))
        width = max([len(rid) for _, rid, _ in resources] + [10])
        for _, rid, r in [x for x in resources if x[0] == n]:
            print("  %-*s  %-8s %s" % (width, rid, r.cls, ",".join(r.modes)))
    if app.console_server:
        print("operator console at %s" % app.console_server.url)
    print("runtimes: %s; Ctrl-C to stop" % ", ".join(sorted(app.tokens)), flush=True)
