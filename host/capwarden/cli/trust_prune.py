"""`capwarden trust prune`: delete the trust records that can no longer matter (trust.prune)."""

from capwarden.cli._common import print_json

DAY = 86400

PRUNE_HELP = """\
Delete what can no longer matter, once it is --keep-days past its end (default %d): issued
tickets and descriptors past their expiry (a terminal refuses them whatever a list says),
revocations whose credential expired (they have left every revocation list already), and
enrollment secrets spent or expired. The revocation lists terminals fetch do not change. Runs in
short transactions, so a service keeps issuing meanwhile; 'capwarden trust serve' also prunes on
its own once an hour (--prune-every). --dry-run counts what would go and deletes nothing.

examples:
  capwarden trust prune --data ./trust --dry-run
  capwarden trust prune --data ./trust --keep-days 90 --json
"""


def register(sub):
    from capwarden.cli._common import int_range
    from capwarden.cli.trust import leaf
    from capwarden.trust.periods import KEEP_S

    p = leaf(sub, "prune", "delete records that can no longer matter (expired credentials, old revocations)",
             PRUNE_HELP % (KEEP_S // DAY), prune)
    p.add_argument("--keep-days", type=int_range(0, 3650, "--keep-days"), default=KEEP_S // DAY, metavar="DAYS",
                   help="keep records this many days past their end (default %d)" % (KEEP_S // DAY))
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")


def prune(args):
    import sys

    from capwarden.cli.trust import Deployment
    from capwarden.trust import prune as pruning

    def progress(what, n):
        if not args.json:
            print("  %s: %d deleted so far" % (what, n), file=sys.stderr, flush=True)

    with Deployment(args) as dep:
        out = pruning.prune(dep.db, keep_s=args.keep_days * DAY, dry_run=args.dry_run, progress=progress)
    if args.json:
        print_json({"dry_run": args.dry_run, "keep_days": args.keep_days, "pruned": out})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print("%s %s (kept: %d days past their end)" % (
        verb, ", ".join("%d %s" % (n, what) for what, n in out.items()), args.keep_days))
    return 0
