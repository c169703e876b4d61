"""`capwarden trust authorizer|terminal|revoke|status|keys`: the operator's actions on a trust
deployment, straight on its database (the functions the service calls), beside running service
processes."""

import time

from capwarden.cli._common import formatter, human_time, int_range, print_json

AUTHORIZER_HELP = """\
Authorizers ask the issuers for credentials (POST /v1/tickets, /v1/descriptors) with their
bearer token, within their policy: which Fays (--fay, '*' for any), which terminals (--terminal,
'*'), which resource patterns and modes (--grant 'PATTERN=MODES', patterns without the
Terminal_ID: 'camera/*', 'sim/**'), and the longest validity (--max-validity SECONDS). add prints
the token once. A suspended authorizer's token is refused until it is resumed.

examples:
  capwarden trust authorizer add --data ./trust ops --fay '*' --terminal '*' \\
      --grant 'sim/camera=read' --grant 'sim/motor_left=write' --max-validity 3600
  capwarden trust authorizer list --data ./trust --json
  capwarden trust authorizer suspend --data ./trust ops
"""

TERMINAL_HELP = """\
The Registration_Authority's terminals. enroll makes a one-time enrollment secret (shown once)
for a named Terminal_ID or for one the RA assigns, and prints the trust anchor (the RA's public
keys) that the terminal is given with it (--anchor-out FILE writes it). A suspended terminal gets
no key set, no revocation list and no credential until it is resumed; deregister is final.

examples:
  capwarden trust terminal enroll --data ./trust --anchor-out ra-anchor.json
  capwarden trust terminal enroll --data ./trust --terminal-id "$(capwarden id new terminal)" --group hangar-2
  capwarden trust terminal list --data ./trust
  capwarden trust terminal suspend --data ./trust terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b
"""

REVOKE_HELP = """\
Revoke a ticket (its jti) or descriptor (its descriptor id) issued by this service: the
revocation is signed by the service's issuer key, recorded, and enters the revocation list of
the credential's terminal at the next version. Running services push that version when they run
with --mqtt; --mqtt here pushes it too; otherwise terminals find it at their next poll.

examples:
  capwarden trust revoke --data ./trust 0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b --reason compromised
"""

STATUS_HELP = """\
The deployment at a glance: every terminal with its status, its last contact with the service
and the newest key set it acknowledged; per key-set version, how many terminals acknowledged it
and how many registered ones are behind; a key rotation left unfinished (the keys changed, the
key set not published: 'capwarden trust keys publish' finishes it); and the revocations older
than --stale SECONDS that their terminal has not fetched yet (no list of that version was
served to it).

examples:
  capwarden trust status --data ./trust
  capwarden trust status --data ./trust --stale 60 --json
"""

KEYS_HELP = """\
The service's keys: issuer keys (sign tickets, descriptors, revocations, lists) and
Registration_Authority keys (sign key sets and registrations). rotate adds a new key and
publishes the key set that distributes it; a new issuer key starts signing %d s later (or
--effective-in SECONDS) so terminals fetch it first; --now makes it sign at once, for tests and
emergencies only: terminals that have not fetched the new key set refuse what it signs until
they do. A new issuer key never signs before a published key set carries it: if rotate or
retire was interrupted between changing the keys and publishing, list and status say the
rotation is unfinished, and publish finishes it (rotate and retire also do). retire removes an
old key; it is refused while registered terminals that have not acknowledged the key set with
its successor still need it, unless --force. See docs/deployment.md, "Rotating keys".

examples:
  capwarden trust keys list --data ./trust
  capwarden trust keys rotate --data ./trust --role issuer --effective-in 86400
  capwarden trust keys publish --data ./trust
  capwarden trust keys retire --data ./trust issuer-0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b
"""

DAY = 86400
STALE_DEFAULT_S = 300
STALE_SHOWN = 100


def register(sub):
    from capwarden.cli.trust import group, leaf

    a = group(sub, "authorizer", "add, list, suspend or resume authorizers", AUTHORIZER_HELP)
    p = leaf(a, "add", "add an authorizer (prints its token once)", AUTHORIZER_HELP, authorizer_add)
    p.add_argument("name", help="the authorizer's name (unique)")
    add_policy_args(p, required=True)
    leaf(a, "list", "list authorizers and their policies", AUTHORIZER_HELP, authorizer_list)
    for name, what in (("suspend", "refuse an authorizer's token"), ("resume", "accept it again")):
        p = leaf(a, name, what, AUTHORIZER_HELP, authorizer_status)
        p.add_argument("name", help="the authorizer's name or id")

    t = group(sub, "terminal", "enroll, list, suspend, resume or deregister terminals", TERMINAL_HELP)
    p = leaf(t, "enroll", "make a one-time enrollment secret for a terminal", TERMINAL_HELP, terminal_enroll)
    p.add_argument("--terminal-id", default=None, help="the Terminal_ID it registers as (default: the RA assigns one)")
    p.add_argument("--group", default=None, help="a group name for the terminal (1..128 characters)")
    p.add_argument("--expires-in", type=int_range(1, 90 * DAY, "--expires-in"), default=7 * DAY, metavar="SECONDS",
                   help="how long the secret may be used (default 7 days, at most 90)")
    p.add_argument("--anchor-out", default=None, metavar="FILE",
                   help="also write the trust anchor (RA public keys, JSON) to FILE for the terminal")
    leaf(t, "list", "list registered terminals", TERMINAL_HELP, terminal_list)
    for name, what in (("suspend", "stop serving a terminal"), ("resume", "serve a suspended terminal again"),
                       ("deregister", "deregister a terminal for good")):
        p = leaf(t, name, what, TERMINAL_HELP, terminal_status)
        p.add_argument("terminal_id", metavar="TERMINAL_ID")

    p = leaf(sub, "revoke", "revoke an issued ticket or descriptor", REVOKE_HELP, revoke)
    p.add_argument("target_id", metavar="ID", help="the ticket's jti or the descriptor's id")
    p.add_argument("--reason", choices=["unspecified", "compromised", "superseded", "no_longer_needed"], default=None)
    p.add_argument("--mqtt", default=None, metavar="URL", help="push the new list version to this broker too")

    p = leaf(sub, "status", "terminals, syncs, key-set acknowledgements, stale revocations", STATUS_HELP, status)
    p.add_argument("--stale", type=int_range(0, None, "--stale"), default=STALE_DEFAULT_S, metavar="SECONDS",
                   help="list revocations older than this not yet fetched by their terminal (default %d)"
                        % STALE_DEFAULT_S)

    from capwarden.trust.periods import ROTATION_LEAD_S

    keys_help = KEYS_HELP % ROTATION_LEAD_S
    k = group(sub, "keys", "list, rotate, publish or retire the service's keys", keys_help)
    leaf(k, "list", "list the service's keys (and an unfinished rotation)", keys_help, keys_list)
    p = leaf(k, "rotate", "add a new key and publish the key set with it", keys_help, keys_rotate)
    p.add_argument("--role", required=True, choices=["issuer", "ra"], help="which key to rotate")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--effective-in", type=int_range(0, 365 * DAY, "--effective-in"), default=None,
                      metavar="SECONDS",
                      help="a new issuer key starts signing this long after its key set is published "
                           "(default %d: time for terminals to fetch it)" % ROTATION_LEAD_S)
    when.add_argument("--now", action="store_true",
                      help="a new issuer key signs as soon as its key set is published, for tests and emergencies "
                           "(a compromised key): terminals that have not fetched that set refuse what it signs")
    leaf(k, "publish", "finish an interrupted rotation or retirement: publish the key set the keys call for",
         keys_help, keys_publish)
    p = leaf(k, "retire", "retire an old key", KEYS_HELP, keys_retire)
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--force", action="store_true",
                   help="retire it even though some terminals have not acknowledged its successor")


# ---- policies --------------------------------------------------------------------------------

def add_policy_args(p, required):
    need = " (required unless --policy)" if required else ""
    p.add_argument("--fay", action="append", default=[], metavar="FAY",
                   help="a Fay it may grant to, or '*' for any; repeatable" + need)
    p.add_argument("--terminal", action="append", default=[], metavar="TERMINAL_ID",
                   help="a terminal it may grant on, or '*' for any; repeatable" + need)
    p.add_argument("--grant", action="append", default=[], metavar="PATTERN=MODES",
                   help="a resource pattern without the Terminal_ID and its modes, e.g. 'sim/camera=read,execute' "
                        "or 'sim/**=read'; repeatable" + need)
    p.add_argument("--max-validity", type=int_range(1, 90 * DAY, "--max-validity"), default=None, metavar="SECONDS",
                   help="the longest validity it may ask for (default: 1 day; for init's first authorizer 90 days)")
    p.add_argument("--policy", default=None, metavar="FILE",
                   help="the whole policy as JSON: {\"fay_ids\", \"terminal_ids\", \"grants\", \"max_validity_s\"}")


def policy_from_args(args, full=False):
    """The policy JSON of --policy or of the --fay/--terminal/--grant/--max-validity options;
    with none of them and `full`, the policy that allows everything. Raises UsageError."""
    import json

    from capwarden.cli._common import read_input
    from capwarden.credentials.model import MODES
    from capwarden.errors import UsageError
    from capwarden.trust.errors import InvalidRequest
    from capwarden.trust.issuance import DESCRIPTOR_MAX_S
    from capwarden.trust.policy import Policy

    parts = args.fay or args.terminal or args.grant or args.max_validity is not None
    if args.policy is not None:
        if parts:
            raise UsageError("give --policy FILE or --fay/--terminal/--grant/--max-validity, not both")
        try:
            obj = json.loads(read_input(args.policy, "policy file", 1 << 20, "E_MALFORMED_REQUEST"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError("--policy %s is not JSON: %s" % (args.policy, exc)) from None
    elif not parts and full:
        obj = {"fay_ids": ["*"], "terminal_ids": ["*"], "grants": [{"resource_pattern": "**", "modes": list(MODES)}],
               "max_validity_s": DESCRIPTOR_MAX_S}
    else:
        missing = [o for o, v in (("--fay", args.fay), ("--terminal", args.terminal), ("--grant", args.grant)) if not v]
        if missing:
            raise UsageError("the policy needs %s (or --policy FILE)" % ", ".join(missing))
        grants = []
        for g in args.grant:
            pattern, sep, modes = g.rpartition("=")
            if not sep or not pattern or not modes:
                raise UsageError("--grant takes PATTERN=MODES, e.g. 'sim/camera=read,execute' (got %r)" % g)
            grants.append({"resource_pattern": pattern, "modes": [m.strip() for m in modes.split(",")]})
        obj = {"fay_ids": args.fay, "terminal_ids": args.terminal, "grants": grants,
               "max_validity_s": args.max_validity or DAY}
    try:
        Policy.from_json(obj)
    except InvalidRequest as exc:
        raise UsageError("the policy: %s" % exc) from None
    return obj


# ---- authorizers -----------------------------------------------------------------------------

def authorizer_add(args):
    from capwarden.cli.trust import Deployment
    from capwarden.trust import authorizers

    policy = policy_from_args(args)
    with Deployment(args) as dep:
        aid, token = authorizers.add_authorizer(dep.db, args.name, policy)
    if args.json:
        print_json({"authorizer_id": aid, "name": args.name, "token": token, "policy": policy})
    else:
        print("authorizer %s (%s) token (shown once, keep it): %s" % (args.name, aid, token))
    return 0


def authorizer_list(args):
    from capwarden.cli.trust import Deployment
    from capwarden.trust import authorizers

    with Deployment(args) as dep:
        rows = authorizers.list_authorizers(dep.db)
    if args.json:
        print_json({"authorizers": rows})
        return 0
    if not rows:
        print("no authorizers")
    for a in rows:
        p = a["policy"]
        print("%s  %s  %s  fays %s  terminals %s  max %d s  %s" % (
            a["name"], a["authorizer_id"], a["status"], ",".join(p["fay_ids"]), ",".join(p["terminal_ids"]),
            p["max_validity_s"], " ".join("%s=%s" % (g["resource_pattern"], ",".join(g["modes"])) for g in p["grants"])))
    return 0


def authorizer_status(args):
    from capwarden.cli.trust import Deployment
    from capwarden.trust import authorizers
    from capwarden.trust.models import ACTIVE, SUSPENDED

    status = SUSPENDED if args.trust_authorizer_command == "suspend" else ACTIVE
    with Deployment(args) as dep:
        a = authorizers.set_authorizer_status(dep.db, args.name, status)
    if args.json:
        print_json(a)
    else:
        print("authorizer %s is %s" % (a["name"], a["status"]))
    return 0


# ---- terminals -------------------------------------------------------------------------------

def terminal_enroll(args):
    import json

    from capwarden.cli._common import check_id, check_output, write_output
    from capwarden.cli.trust import Deployment
    from capwarden.trust import registry

    if args.terminal_id is not None:
        check_id(args.terminal_id, "terminal", "--terminal-id")
    if args.anchor_out:
        check_output(args.anchor_out, "the trust anchor", "--anchor-out")
    with Deployment(args) as dep:
        out = dep.db.run(lambda s: registry.enroll(s, dep.ring, args.terminal_id, args.group, args.expires_in))
    anchor = {"ra_keys": out["ra_keys"], "key_set_version": out["key_set_version"]}
    if args.anchor_out:
        write_output(args.anchor_out, (json.dumps(anchor, indent=1, sort_keys=True) + "\n").encode(),
                     what="the trust anchor")
    if args.json:
        print_json(dict(out, anchor_file=args.anchor_out))
    else:
        print("enrollment secret (shown once; give it to the terminal): %s" % out["enrollment_secret"])
        print("for %s, usable until %s" % (out["terminal_id"] or "a Terminal_ID the RA assigns",
                                           human_time(out["expires_at"])))
        print("trust anchor: key set %d, RA key%s %s%s" % (
            out["key_set_version"], "s" if len(out["ra_keys"]) > 1 else "",
            ", ".join(k["key_id"] for k in out["ra_keys"]), " (written to %s)" % args.anchor_out if args.anchor_out
            else ""))
    return 0


def terminal_list(args):
    from capwarden.cli.trust import Deployment
    from capwarden.trust import registry

    with Deployment(args) as dep:
        rows = dep.db.run(registry.list_terminals, write=False)
    if args.json:
        print_json({"terminals": rows})
        return 0
    if not rows:
        print("no terminals registered")
    for t in rows:
        print("%s  %-12s  key set %d  last sync %s%s" % (t["terminal_id"], t["status"], t["key_set_acked"],
                                                        human_time(t["last_sync_at"]),
                                                        "  group %s" % t["group"] if t["group"] else ""))
    return 0


def terminal_status(args):
    from capwarden.cli._common import check_id
    from capwarden.cli.trust import Deployment
    from capwarden.trust import registry
    from capwarden.trust.models_registry import DEREGISTERED, REGISTERED, SUSPENDED

    check_id(args.terminal_id, "terminal", "TERMINAL_ID")
    status = {"suspend": SUSPENDED, "resume": REGISTERED, "deregister": DEREGISTERED}[args.trust_terminal_command]
    with Deployment(args) as dep:
        def change(s):
            if status == REGISTERED and registry.terminal_state(s, args.terminal_id) == REGISTERED:
                return REGISTERED
            return registry.set_status(s, args.terminal_id, status)
        before = dep.db.run(change)
    if args.json:
        print_json({"terminal_id": args.terminal_id, "status": status, "previous": before})
    else:
        print("%s is %s%s" % (args.terminal_id, status, "" if before != status else " (it was already)"))
    return 0


# ---- revocations -----------------------------------------------------------------------------

def revoke(args):
    from capwarden.cli._common import check_id
    from capwarden.cli.trust import Deployment
    from capwarden.trust.revocations import RevocationService

    check_id(args.target_id, "uuid", "ID")
    with Deployment(args) as dep:
        # In the name of the authorizer that issued the credential, as the service records it.
        answer = RevocationService(dep.db, dep.ring).revoke_as_operator(args.target_id, args.reason)
    (tid, version), = answer["versions"].items()
    out = dict(answer["revocation"], terminal_id=tid, version=version)
    pushed = None
    if args.mqtt:
        pushed = _push(args.mqtt, {out["terminal_id"]: out["version"]})
    if args.json:
        print_json(dict(out, pushed=pushed))
    else:
        print("revoked %s %s (%s): version %d of %s's revocation list%s" % (
            out["kind"], out["target_id"], out["reason"], out["version"], out["terminal_id"],
            "" if pushed is None else ("; pushed" if pushed else "; push failed, terminals will poll")))
    return 0


def _push(url, versions, timeout=10.0):
    """Publish revocation-list versions once; True when the broker acknowledged them."""
    import asyncio

    from capwarden.errors import UsageError
    from capwarden.trust.push import MqttPublisher, PushError

    try:
        pub = MqttPublisher(url)
    except PushError as exc:
        raise UsageError("--mqtt: %s" % exc) from None

    async def run():
        await pub.revocations(versions)
        deadline = time.monotonic() + timeout
        while pub.published < len(versions) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await pub.aclose()
        return pub.published >= len(versions)
    return asyncio.run(run())


# ---- status ----------------------------------------------------------------------------------

def stale_revocations(session, older_than, now, limit=STALE_SHOWN):
    """(count, first `limit` rows) of revocations made before now - older_than whose terminal is
    registered and was never served a revocation list of that version or later (trust.served;
    being in touch otherwise is not fetching the list): it cannot hold them yet."""
    import sqlalchemy as sa

    from capwarden.trust.models import Revocation
    from capwarden.trust.models_registry import REGISTERED, RegisteredTerminal

    cond = sa.and_(Revocation.revoked_at <= now - older_than, RegisteredTerminal.status == REGISTERED,
                   RegisteredTerminal.revocations_served < Revocation.list_version)
    base = sa.select(Revocation, RegisteredTerminal.last_sync_at, RegisteredTerminal.revocations_served).join(
        RegisteredTerminal, RegisteredTerminal.terminal_id == Revocation.terminal_id).where(cond)
    count = session.scalar(sa.select(sa.func.count()).select_from(base.subquery()))
    rows = [{"revocation_id": r.revocation_id, "target_id": r.target_id, "kind": r.target_kind,
             "terminal_id": r.terminal_id, "revoked_at": r.revoked_at, "version": r.list_version,
             "terminal_last_sync_at": last, "terminal_served_version": served}
            for r, last, served in session.execute(base.order_by(Revocation.revoked_at).limit(limit))]
    return count, rows


def status(args):
    from capwarden.cli.trust import Deployment
    from capwarden.trust import keydist, registry

    now = int(time.time())
    with Deployment(args) as dep:
        def read(s):
            count, stale = stale_revocations(s, args.stale, now)
            return {"terminals": registry.list_terminals(s), "key_sets": registry.keyset_status(s),
                    "stale_revocations": stale, "stale_revocations_count": count,
                    "rotation": keydist.rotation_state(s, dep.ring)}
        out = dep.db.run(read, write=False)
        out.update(issuer_id=dep.issuer_id, stale_after_s=args.stale, checked_at=now)
        data = dep.data
    if args.json:
        print_json(out)
        return 0
    print("issuer %s: %d terminal(s), key set %s" % (out["issuer_id"], len(out["terminals"]),
                                                    out["key_sets"][0]["version"] if out["key_sets"] else "none"))
    for t in out["terminals"]:
        print("  %s  %-12s  key set %d  last sync %s" % (t["terminal_id"], t["status"], t["key_set_acked"],
                                                        human_time(t["last_sync_at"], now)))
    for k in out["key_sets"]:
        print("key set %d (effective %s): %d acknowledged, %d registered terminal(s) behind" % (
            k["version"], human_time(k["effective_at"], now), k["acknowledged"], k["registered_behind"]))
    for line in unfinished_text(out["rotation"], data):
        print(line)
    print("%d revocation(s) older than %d s not yet fetched by their terminal" % (out["stale_revocations_count"],
                                                                                  args.stale))
    for r in out["stale_revocations"]:
        print("  %s %s on %s, revoked %s, terminal last seen %s" % (
            r["kind"], r["target_id"], r["terminal_id"], human_time(r["revoked_at"], now),
            human_time(r["terminal_last_sync_at"], now)))
    return 0


# ---- keys ------------------------------------------------------------------------------------

def rotation_state(dep):
    """keydist.rotation_state of a Deployment's ring and database (one read transaction)."""
    from capwarden.trust.keydist import rotation_state as state

    return dep.db.run(lambda s: state(s, dep.ring), write=False)


def unfinished_text(rotation, data):
    """The lines that tell the operator a rotation is unfinished and what to run, or []."""
    if not rotation["unfinished"]:
        return []
    what = []
    if rotation["pending"]:
        what.append("issuer key(s) %s not yet in a published key set (they do not sign)"
                    % ", ".join(rotation["pending"]))
    others = [kid for kid in rotation["unpublished"] if kid not in rotation["pending"]]
    if others:
        what.append("key(s) %s not in key set %d" % (", ".join(others), rotation["key_set_version"]))
    if rotation["withdrawn"]:
        what.append("retired key(s) %s still in key set %d" % (", ".join(rotation["withdrawn"]),
                                                              rotation["key_set_version"]))
    return ["key rotation unfinished: %s; run 'capwarden trust keys publish --data %s'"
            % ("; ".join(what) or "the keys and key set %d differ" % rotation["key_set_version"], data)]


def keys_list(args):
    from capwarden.cli.trust import Deployment

    with Deployment(args) as dep:
        rows = dep.ring.describe()
        rotation = rotation_state(dep)
        data = dep.data
    if args.json:
        print_json({"keys": rows, "rotation": rotation})
        return 0
    for k in rows:
        state = "retired %s" % human_time(k["retired_at"]) if k["retired_at"] is not None else (
            "pending (in no published key set yet)" if k["pending"] else "current" if k["current"] else "kept")
        print("%s  %-6s  %s  valid from %s  %s" % (k["key_id"], k["role"], k["algorithm"], human_time(k["valid_from"]),
                                                   state))
    for line in unfinished_text(rotation, data):
        print(line)
    return 0


def keys_rotate(args):
    from capwarden.cli.trust import Deployment
    from capwarden.errors import UsageError
    from capwarden.trust import registry

    if args.role == "ra" and (args.effective_in is not None or args.now):
        raise UsageError("--effective-in and --now are for issuer keys: a new RA key signs the key set that "
                         "introduces it at once")
    now = int(time.time())
    # None: the library's lead (trust.periods.ROTATION_LEAD_S, applied by keydist), decided there only.
    effective_at = now if args.now else None if args.effective_in is None else now + args.effective_in
    with Deployment(args) as dep:
        out = registry.rotate(dep.db, dep.ring, args.role, now=now, effective_at=effective_at)
    out.update(role=args.role, effective_at=out.pop("valid_from"))
    if args.json:
        print_json(out)
    else:
        print("new %s key %s (signs from %s); key set version %d published" % (
            args.role, out["key_id"], human_time(out["effective_at"], now), out["version"]))
    return 0


def keys_publish(args):
    from capwarden.cli.trust import Deployment
    from capwarden.trust.keydist import finish_rotation

    now = int(time.time())
    with Deployment(args) as dep:
        out = finish_rotation(dep.db, dep.ring, now=now)
        out["keys"] = [k for k in dep.ring.describe() if k["key_id"] in out["confirmed"]]
        out["rotation"] = rotation_state(dep)
    if args.json:
        print_json(out)
        return 0
    if out["published"]:
        print("key set version %d published" % out["version"])
    else:
        print("key set version %d already carries the service's keys: nothing to publish" % out["version"])
    for k in out["keys"]:
        print("issuer key %s is distributed: it signs from %s" % (k["key_id"], human_time(k["valid_from"], now)))
    return 0


def keys_retire(args):
    from capwarden.cli.trust import Deployment
    from capwarden.trust import registry

    from capwarden.trust.servicekeys import KeyRingError

    with Deployment(args) as dep:
        known = {k["key_id"]: k for k in dep.ring.describe()}
        # Asked first: the RA's check of the terminals would otherwise answer for a retired key.
        if args.key_id in known and known[args.key_id]["retired_at"] is not None:
            raise KeyRingError("key %s is already retired" % args.key_id)
        out = registry.retire_key(dep.db, dep.ring, args.key_id, force=args.force)
    if args.json:
        print_json(out)
    else:
        print("retired %s%s%s" % (args.key_id, "; key set version %d published" % out["version"] if out["version"]
                                  else "", " (forced: %d terminal(s) had not acknowledged its successor)"
                                  % len(out["needing"]) if out["forced"] else ""))
    return 0
