"""`capwarden serve`: run the Protocol_Engine for runtimes, against boards."""

import asyncio
import os
import signal

from capwarden.cli._common import add_store, err, formatter, store_path

HELP = """\
Run the Protocol_Engine: the runtime API (cap-supplement S3) over WebSocket at /cap/v1, in
front of the virtual board (--board sim) or real boards (--port, repeatable). Runtimes
authenticate with 'Authorization: Bearer TOKEN'. Plain ws:// only on loopback or a Unix
socket; elsewhere give --tls-cert and --tls-key. Resources appear as TERMINAL_ID/BOARD/NAME.

examples:
  capwarden serve --store ./store --listen 127.0.0.1:8765 --board sim --runtime-token rt1=s3cret
  capwarden serve --store ./store --listen 0.0.0.0:8765 --port /dev/ttyACM0 \\
      --tls-cert cert.pem --tls-key key.pem --config ./engine.json --liveness motor=500/2000
  capwarden serve --store ./store --listen 127.0.0.1:8765 --board sim --runtime-token rt1=s3cret-token \\
      --board-setting failsafe_ms=2000 --board-setting link_loss_hold=led

The config file (mode 600) keeps tokens out of the process list:
  {"runtimes": {"rt1": {"token": "s3cret-token", "fays": ["fay:0192..."]}},
   "liveness": {"motor": "500/2000"}, "leeway": 60, "board": {"failsafe_ms": 2000}}
"""


def register(sub):
    p = sub.add_parser("serve", help="run the engine and its runtime API", description=HELP,
                       formatter_class=formatter())
    add_store(p)
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="HOST:PORT, or unix:PATH")
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--board", choices=["sim"], help="start the virtual board")
    b.add_argument("--port", action="append", metavar="DEVICE", help="a board's serial port or pyserial URL")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="runtimes (tokens, Fays), liveness and leeway as JSON, owner-readable only (default "
                        "STORE/engine.json when it exists); keeps tokens out of the process list")
    p.add_argument("--runtime-token", action="append", default=[], metavar="ID=TOKEN", help="a runtime and its token")
    p.add_argument("--runtime-fays", action="append", default=[], metavar="ID=FAY[,FAY...]",
                   help="the Fays a runtime may act for (recommended; without it a runtime may act for any "
                        "Fay whose credential it presents)")
    p.add_argument("--tls-cert", default=None)
    p.add_argument("--tls-key", default=None)
    p.add_argument("--audit", default=None, metavar="FILE", help="audit log (default STORE/audit.log)")
    p.add_argument("--liveness", action="append", default=[], metavar="CLASS=INTERVAL_MS/TIMEOUT_MS",
                   help="heartbeat interval and timeout for a resource class (default 1000/5000)")
    p.add_argument("--leeway", type=int, default=None, metavar="SECONDS",
                   help="clock-skew leeway for credential validity, 0..300 (default 60, as in verify); sessions "
                        "end when a fresh request would be refused")
    p.add_argument("--max-busy-ms", type=int, default=None, metavar="MS",
                   help="the longest busy marker a runtime's heartbeat may set, 0..600000 (default 60000): a "
                        "session in a long healthy operation is not suspended for that long")
    p.add_argument("--board-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting given to every board at start and after a reset: failsafe_ms (no grant "
                        "outlives that much host silence), failsafe_delay_ms (a lost lease waits that long for a "
                        "heartbeat first, at most 30000), lock_delay_ms (safe hold after a lost holder), "
                        "link_loss_hold=NAME[,NAME] (resources that keep their state on link loss; the rest go safe)")
    p.add_argument("--heapsize", default=None, help="virtual board heap (with --board sim)")
    p.set_defaults(func=main)


def parse_tokens(items):
    from capwarden.errors import UsageError

    tokens = {}
    for it in items:
        rid, sep, tok = it.partition("=")
        if not sep or not rid or len(tok) < 8:
            raise UsageError("--runtime-token takes RUNTIME_ID=TOKEN with a token of 8 characters or more")
        tokens[rid] = tok
    return tokens


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
    from capwarden.engine.app import EngineApp
    from capwarden.engine.liveness import MAX_BUSY_MS, LivenessPolicy
    from capwarden.errors import UsageError

    from capwarden.engine import boardconfig, config

    store = store_path(args)
    path = args.config or os.path.join(store, "engine.json")
    tokens, bindings, live, leeway, board = (config.load(path) if args.config or os.path.exists(path)
                                             else ({}, {}, [], None, {}))
    board.update(boardconfig.parse_items(args.board_setting))
    tokens.update(parse_tokens(args.runtime_token))
    leeway = args.leeway if args.leeway is not None else (60 if leeway is None else leeway)
    try:
        liveness = LivenessPolicy.parse(live + args.liveness)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not 0 <= leeway <= 300:
        raise UsageError("--leeway must be 0..300 seconds")
    max_busy = MAX_BUSY_MS if args.max_busy_ms is None else args.max_busy_ms
    if not 0 <= max_busy <= 600000:
        raise UsageError("--max-busy-ms must be 0..600000")
    app = EngineApp(store, args.listen, tokens, sim=args.board == "sim",
                    fay_bindings=parse_bindings(args.runtime_fays, tokens, bindings),
                    ports=args.port or (), audit_path=args.audit, liveness=liveness, tls_cert=args.tls_cert,
                    tls_key=args.tls_key, heapsize=args.heapsize, progress=err, leeway=leeway,
                    max_busy_ms=max_busy, board_settings=board)

    async def run():
        try:
            await app.start()
        except OSError as exc:   # the address in use, an unreadable TLS file: said, not a traceback
            raise UsageError("cannot start serving on %s: %s" % (args.listen, exc.strerror or exc)) from None
        boards = ", ".join("%s (%d resources)" % (n, len(b.info.resources)) for n, b in app.boards.items())
        print("serving %s for terminal %s; boards: %s" % (app.server.url, app.engine.terminal_id, boards), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await app.stop()

    asyncio.run(run())
    return 0
