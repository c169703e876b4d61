"""The trust services' periods, each defined once, in a module that imports nothing: the
command line shows them in its help, and building that help must not import SQLAlchemy (a
third of a second added to every `capwarden` command, `id new` included)."""

ROTATION_LEAD_S = 3600        # a new issuer key signs an hour after its key set is out (keydist)
KEEP_S = 30 * 86400           # a record is kept this long after it stopped mattering (prune)
PRUNE_EVERY_S = 3600          # the service prunes this often (config, service)
