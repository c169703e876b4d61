"""What a trust service process needs: its database, its keys, its push publisher.

ServiceConfig is plain data so that tests and the command line build it the same way; keys and
publisher are injected objects (a servicekeys.KeyRing, a push publisher), so nothing below the
service cares where they come from. from_data_dir() is the operator's layout:

    DATA_DIR/trust.db     the SQLite database (when no --db URL is given)
    DATA_DIR/keys/        the key ring (servicekeys.ring_folder)
"""

import dataclasses
import os
import time
from typing import Any, Callable

from capwarden.trust.periods import KEEP_S, PRUNE_EVERY_S

DB_FILE = "trust.db"


def default_db_url(data_dir):
    """The SQLite database URL inside the service's data folder."""
    return "sqlite:///" + os.path.join(os.path.abspath(data_dir), DB_FILE)


@dataclasses.dataclass
class ServiceConfig:
    db_url: str                          # sqlite:///PATH or postgresql+psycopg://...
    keys: Any                            # issuer_key(now) -> SigningKey (servicekeys.KeyRing)
    publisher: Any = None                # push publisher; None: push.NullPublisher (poll only)
    clock: Callable[[], float] = time.time
    migrate: bool = True                 # bring the schema to head when the app is created
    data_dir: str | None = None
    require_registration: bool = False   # issue only for registered terminals (default: also unknown ones)
    keyset_watch_s: float = 2.0          # how often the service looks for a new key-set version to push
    prune_every_s: float = float(PRUNE_EVERY_S)   # how often it prunes what can no longer matter; 0: never
    prune_keep_s: int = KEEP_S           # kept this long past its end (trust.prune)

    @classmethod
    def from_data_dir(cls, data_dir, db_url=None, broker_url=None, **broker_options):
        """The configuration of the service whose data folder is `data_dir`: its key ring,
        its SQLite database unless `db_url` names another, and an MQTT publisher when
        `broker_url` is given. Raises servicekeys.KeyRingError when the ring is missing."""
        from capwarden.trust import push, servicekeys

        ring = servicekeys.KeyRing.open(servicekeys.ring_folder(data_dir))
        return cls(db_url=db_url or default_db_url(data_dir), keys=ring,
                   publisher=push.publisher_for(broker_url, **broker_options), data_dir=data_dir)
