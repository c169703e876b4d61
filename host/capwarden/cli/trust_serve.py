"""`capwarden trust init` and `capwarden trust serve`: set a deployment up, and run it."""

import os

from capwarden.cli._common import add_json, formatter, listen_address, print_json

INIT_HELP = """\
Create a trust deployment: the data folder DATA (created if its parent exists), the database
(DATA/trust.db, or --db URL: an empty SQLite file or PostgreSQL database) and its schema, the
service's signing keys (an issuer key and a Registration_Authority key, DATA/keys, owner-only),
key set version 1, and the first authorizer. That authorizer's token is printed once: keep it
(it is stored only as a hash). An existing deployment is never overwritten.

The first authorizer's policy is everything (any Fay, any terminal, every resource and mode, the
longest validity) unless --fay/--terminal/--grant/--max-validity or --policy narrow it.

examples:
  capwarden trust init --data ./trust --issuer issuer:acme
  capwarden trust init --data /var/lib/capwarden-trust --issuer issuer:acme \\
      --db 'postgresql+psycopg://capwarden@/capwarden?host=/var/run/postgresql' --json
"""

SERVE_HELP = """\
Run the trust service: the HTTP API of docs/trust-api.md (OpenAPI at /openapi.json) over HTTPS
(--tls-cert and --tls-key), or plain HTTP when --listen is a loopback address. Several serve
processes may share one PostgreSQL database (and one data folder). With --mqtt, each new
revocation-list and key-set version is pushed to the broker; without it terminals poll. Prints
one line when it is up ('serving URL'); logs go to stderr. Ctrl-C stops it (exit 130), SIGTERM
too (exit 0).

examples:
  capwarden trust serve --data ./trust --listen 127.0.0.1:8443
  capwarden trust serve --data /var/lib/capwarden-trust --listen 0.0.0.0:8443 \\
      --tls-cert /etc/capwarden/trust.crt --tls-key /etc/capwarden/trust.key \\
      --mqtt mqtts://broker.example:8883 --mqtt-username trust-service --mqtt-password-file /etc/capwarden/mqtt.pw
"""


def register_init(sub):
    from capwarden.cli import trust, trust_admin

    p = sub.add_parser("init", help="create the database, the service's keys and the first authorizer",
                       description=INIT_HELP, formatter_class=formatter())
    trust.add_data(p)
    p.add_argument("--issuer", required=True, metavar="ISSUER_ID",
                   help="the issuer id the service signs as (iss / issuer_id), e.g. issuer:acme")
    p.add_argument("--algorithm", choices=["ed25519", "ecdsa-p256-sha256"], default="ed25519",
                   help="the algorithm of the service's keys (default ed25519)")
    p.add_argument("--authorizer", default="admin", metavar="NAME", help="the first authorizer's name (default admin)")
    trust_admin.add_policy_args(p, required=False)
    add_json(p)
    p.set_defaults(func=trust.database_errors(init))


def init(args):
    import shutil

    from capwarden.cli import trust, trust_admin
    from capwarden.credentials.store import write_json
    from capwarden.errors import UsageError
    from capwarden.trust import authorizers, registry
    from capwarden.trust.servicekeys import KeyRing, ring_folder

    data = os.path.abspath(args.data or trust.default_data())
    if os.path.exists(os.path.join(data, trust.CONFIG)):
        raise UsageError("%s is a trust data folder already; refusing to overwrite it" % data)
    if os.path.exists(data) and not os.path.isdir(data):
        raise UsageError("--data %s is a file; the data folder is a folder" % data)
    if not os.path.isdir(os.path.dirname(data)):
        raise UsageError("--data %s: the folder %s does not exist; create it first" % (data, os.path.dirname(data)))
    policy = trust_admin.policy_from_args(args, full=True)
    db = trust.open_database(trust.db_url(args, data))     # a URL it cannot use: refused before anything is made
    db.dispose()
    made = not os.path.exists(data)
    try:
        os.makedirs(data, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError("cannot create the data folder %s: %s" % (data, exc.strerror or exc)) from None
    if os.path.exists(ring_folder(data)):
        raise UsageError("%s already holds a key ring; refusing to overwrite it" % ring_folder(data))
    url = trust.db_url(args, data)
    db = trust.open_database(url)
    try:
        _refuse_used(db)
        db.migrate()
        ring = KeyRing.init(ring_folder(data), args.issuer, args.algorithm)
        try:
            aid, token = authorizers.add_authorizer(db, args.authorizer, policy)
            version = db.run(lambda s: registry.init_keysets(s, ring))
            # Written last: its presence means "initialised"; a URL with a password stays owner-only.
            write_json(os.path.join(data, trust.CONFIG),
                       {"format": trust.CONFIG_FORMAT, "db": args.db, "issuer_id": args.issuer}, mode=0o600)
        except BaseException:
            shutil.rmtree(ring_folder(data), ignore_errors=True)
            raise
    except BaseException:
        if made:
            shutil.rmtree(data, ignore_errors=True)
        raise
    finally:
        db.dispose()
    out = {"data": data, "db": trust.safe_url(url), "issuer_id": args.issuer, "key_set_version": version,
           "ra_keys": ring.ra_public(), "keys": ring.describe(),
           "authorizer": {"authorizer_id": aid, "name": args.authorizer, "token": token}}
    if args.json:
        print_json(out)
    else:
        print("trust deployment in %s (database %s), issuer %s, key set version %d" % (data, out["db"], args.issuer,
                                                                                    version))
        print("authorizer %s token (shown once, keep it): %s" % (args.authorizer, token))
        print("next: 'capwarden trust serve --data %s --listen 127.0.0.1:8443'" % data)
    return 0


def _refuse_used(db):
    """A database that already holds a trust deployment is not initialised again: its
    authorizers and terminals belong to another data folder's keys."""
    import sqlalchemy as sa

    from capwarden.cli.trust import safe_url
    from capwarden.errors import UsageError

    if db.revision() is None:
        return
    from capwarden.trust.models import Authorizer

    with db.transaction(write=False) as s:
        if s.scalar(sa.select(sa.func.count()).select_from(Authorizer)):
            raise UsageError("the database %s already holds a trust deployment; give an empty one" % safe_url(db.url))


def register_serve(sub):
    from capwarden.cli import trust
    from capwarden.cli.logsetup import add_verbosity
    from capwarden.trust.config import ServiceConfig

    p = sub.add_parser("serve", help="run the trust service", description=SERVE_HELP, formatter_class=formatter())
    trust.add_data(p)
    p.add_argument("--listen", required=True, type=listen_address, metavar="HOST:PORT",
                   help="HOST:PORT to listen on (port 0: any free one)")
    p.add_argument("--tls-cert", default=None, metavar="PEM", help="the server's certificate chain (PEM)")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="its private key (PEM)")
    p.add_argument("--mqtt", default=None, metavar="URL",
                   help="push versions to this broker: mqtts://HOST[:PORT] (mqtt:// only to a loopback broker)")
    p.add_argument("--mqtt-username", default=None, metavar="NAME", help="the service's broker user name")
    p.add_argument("--mqtt-password-file", default=None, metavar="FILE",
                   help="a file holding the service's broker password (keeps it out of the process list)")
    p.add_argument("--mqtt-ca", default=None, metavar="PEM", help="CA certificate(s) to check an mqtts:// broker by")
    p.add_argument("--require-registration", action="store_true",
                   help="issue credentials only for terminals registered with the RA (default: also for "
                        "terminals that never registered, bounded by the authorizer's terminal_ids)")
    p.add_argument("--keyset-watch", type=_seconds, default=None, metavar="SECONDS",
                   help="how often to look for a new key-set version (a rotation by the command line) "
                        "to push (default %g)" % ServiceConfig.keyset_watch_s)
    p.add_argument("--prune-every", type=_prune_period, default=None, metavar="SECONDS",
                   help="how often to delete records that can no longer matter, %d days past their end "
                        "(as 'capwarden trust prune' does; default %d; 0: never)"
                        % (ServiceConfig.prune_keep_s // 86400, ServiceConfig.prune_every_s))
    add_json(p, "print one JSON object when serving starts (url), or on failure")
    add_verbosity(p)
    p.set_defaults(func=trust.database_errors(serve))


def _prune_period(text):
    import argparse

    try:
        v = float(text)
    except ValueError:
        v = -1
    if not (v == 0 or 60 <= v <= 7 * 86400):
        raise argparse.ArgumentTypeError("0 (never) or a number of seconds from 60 to 604800")
    return v


def _seconds(text):
    import argparse

    try:
        v = float(text)
    except ValueError:
        v = -1
    if not 0.05 <= v <= 3600:
        raise argparse.ArgumentTypeError("a number of seconds from 0.05 to 3600")
    return v


def serve(args):
    from capwarden.cli import trust
    from capwarden.cli.logsetup import configure

    configure(args.verbosity)
    options = _serve_options(args)
    data = os.path.abspath(args.data or trust.default_data())
    with trust.Deployment(args, migrate=True) as dep:   # initialised (else a usage error), schema at head
        _finish_rotation(dep)
    return _run_service(args, data, options)


def _finish_rotation(dep):
    """A rotation or retirement interrupted between its key-ring change and its key-set
    publication (keydist.rotation_state) is finished before serving, as 'capwarden trust keys
    publish' would: until then the new issuer key does not sign. When it cannot be finished
    here (no RA key in this ring, the database refuses), the service starts anyway, still signing
    with the old key, and says what to run."""
    import logging

    from capwarden.trust import keydist

    log = logging.getLogger("capwarden.trust")
    try:
        state = dep.db.run(lambda s: keydist.rotation_state(s, dep.ring), write=False)
        if not state["unfinished"]:
            return
        done = keydist.finish_rotation(dep.db, dep.ring)
        log.warning("an unfinished key rotation was finished at start: key set version %d%s", done["version"],
                    " published" if done["published"] else "")
    except Exception as exc:   # noqa: BLE001 - the old key still signs: serving stays safe
        log.warning("an unfinished key rotation could not be finished at start (%s: %s); run 'capwarden trust "
                    "keys publish --data %s'", exc.__class__.__name__, exc, dep.data)


def _serve_options(args):
    """The serve arguments checked before anything starts: TLS files, loopback rule, broker."""
    from capwarden.cli._common import check_input
    from capwarden.engine.server import is_loopback, load_tls, parse_listen
    from capwarden.errors import UsageError

    kind, host, port = parse_listen(args.listen)
    if kind != "tcp":
        raise UsageError("--listen takes HOST:PORT for the trust service (got %r)" % args.listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    if args.tls_cert is None and not is_loopback(host):
        raise UsageError("plain HTTP is only allowed on loopback: give --tls-cert and --tls-key to listen on %s"
                         % host)
    for path, opt in ((args.tls_cert, "--tls-cert"), (args.tls_key, "--tls-key"), (args.mqtt_ca, "--mqtt-ca"),
                      (args.mqtt_password_file, "--mqtt-password-file")):
        if path is not None:
            check_input(path, "the file", opt)
    if args.tls_cert is not None:
        load_tls(args.tls_cert, args.tls_key)   # a clear error for a bad file, before uvicorn's
    mqtt = {}
    if args.mqtt is None and (args.mqtt_username or args.mqtt_password_file or args.mqtt_ca):
        raise UsageError("--mqtt-username, --mqtt-password-file and --mqtt-ca need --mqtt URL")
    if args.mqtt is not None:
        from capwarden.trust.push import Broker, PushError

        if args.mqtt_username:
            mqtt["username"] = args.mqtt_username
        if args.mqtt_password_file:
            with open(args.mqtt_password_file, encoding="utf-8") as f:
                mqtt["password"] = f.read().strip()
        if args.mqtt_ca:
            mqtt["ca_file"] = args.mqtt_ca
        try:
            Broker(args.mqtt, **mqtt)
        except PushError as exc:
            raise UsageError("--mqtt: %s" % exc) from None
    return {"host": host, "port": port, "mqtt": mqtt}


def _listen_socket(host, port):
    """The bound, listening socket (bound here so that port 0 and an address in use are known
    before the service starts: an address in use is a usage error)."""
    import socket

    from capwarden.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError("--listen %s:%d: %s" % (host, port, exc.strerror)) from None
    family, _type, _proto, _name, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Connections accepted from a socket handed to asyncio get no TCP_NODELAY of their own;
    # they inherit it from here. Without it every answer on a kept-alive connection after the
    # first waits for the client's delayed ACK (about 40 ms): 20 requests a second per client.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise UsageError("cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc)) from None
    sock.set_inheritable(True)
    return sock


def _run_service(args, data, options):
    import asyncio
    import signal

    import uvicorn

    from capwarden.cli import trust
    from capwarden.cli._common import EXIT_INTERRUPTED, EXIT_OK, err
    from capwarden.trust.config import ServiceConfig
    from capwarden.trust.service import create_app, freeze_startup_heap

    config = ServiceConfig.from_data_dir(data, db_url=trust.db_url(args, data, _config_of(data)),
                                         broker_url=args.mqtt, **options["mqtt"])
    config.require_registration = args.require_registration
    if args.keyset_watch is not None:
        config.keyset_watch_s = args.keyset_watch
    if args.prune_every is not None:
        config.prune_every_s = args.prune_every
    app = create_app(config)                 # migrates the schema when a newer capwarden added to it
    sock = _listen_socket(options["host"], options["port"])
    host, port = sock.getsockname()[:2]
    scheme = "https" if args.tls_cert else "http"
    url = "%s://%s:%d" % (scheme, "[%s]" % host if ":" in host else host, port)
    how = {}

    class Server(uvicorn.Server):
        # uvicorn re-raises a captured SIGTERM after its shutdown (the process then dies of it);
        # capwarden's rule is exit 0 after SIGTERM and 130 after Ctrl-C, like `capwarden serve`.
        def capture_signals(self):
            import contextlib

            @contextlib.contextmanager
            def handlers():
                def on_signal(sig, _frame):
                    how.setdefault("signal", sig)
                    self.should_exit = True
                old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, h in old.items():
                        signal.signal(sig, h)
            return handlers()

    server = Server(uvicorn.Config(app, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key, log_config=None,
                                   access_log=args.verbosity >= 1, server_header=False, proxy_headers=False,
                                   lifespan="on", timeout_graceful_shutdown=10))

    async def run():
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            freeze_startup_heap()
            if args.json:
                print_json({"serving": True, "url": url, "issuer_id": config.keys.issuer_id,
                            "db": trust.safe_url(config.db_url), "push": bool(args.mqtt)})
            else:
                print("serving %s (issuer %s, database %s%s); Ctrl-C to stop" % (
                    url, config.keys.issuer_id, trust.safe_url(config.db_url),
                    ", push to %s" % _safe_broker(args.mqtt) if args.mqtt else ", no push: terminals poll"), flush=True)
        await task

    try:
        asyncio.run(run())
    finally:
        sock.close()
    if how.get("signal") == signal.SIGINT:
        err("capwarden trust serve: interrupted; stopped")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _config_of(data):
    from capwarden.cli import trust
    from capwarden.credentials.store import read_json

    return read_json(os.path.join(data, trust.CONFIG), kind=dict)


def _safe_broker(url):
    from capwarden.trust.push import _safe

    return _safe(url)
