"""The engine's config file: runtimes, their tokens and Fays, liveness, leeway (S3: "or the
config file"). Tokens on a command line are visible to every local user in the process list;
in a file readable by its owner only they are not.

    {
      "runtimes": {"rt1": {"token": "a-long-random-secret", "fays": ["fay:0192..."]}},
      "liveness": {"motor": "500/2000", "default": "1000/5000"},
      "leeway": 60,
      "max_busy_ms": 60000,
      "board": {"failsafe_ms": 2000, "failsafe_delay_ms": 500, "link_loss_hold": ["led"]}
    }

`capwarden serve` reads `--config FILE`, or STORE/engine.json when it exists; command-line
options add to it (`--runtime-token`, `--runtime-fays`, `--liveness`, `--board-setting`) or
override it (`--leeway`, `--max-busy-ms`). "board" holds the settings given to every board (boardconfig.py).
"handover" holds the handover policy per resource, roles, rules and model (policyconfig.py;
docs/engine.md, Handover policies). "trust" names the trust service, its thresholds and the
revocation query (online.Settings; docs/engine.md, Online and offline); `--trust URL` overrides its url.
"""

import json
import os
import stat
from collections import namedtuple

from capwarden.engine import boardconfig
from capwarden.errors import UsageError

MIN_TOKEN = 8
KEYS = {"runtimes", "liveness", "leeway", "max_busy_ms", "board", "trust", "handover", "conversion"}
MAX_BUSY_LIMIT_MS = 600000     # the longest busy marker a configuration may allow (faults.md 18)

# What a config file says; None for what it leaves to the defaults.
# "trust": engine/online.py Settings (the trust service, its thresholds and the revocation query).
# "handover": engine/policyconfig.py Settings (a handover policy per resource, roles, rules, model).
# "conversion": engine/conversion.py Converter (automatic ticket conversion, section 4.4.1).
Config = namedtuple("Config", "tokens bindings liveness leeway board max_busy_ms trust handover conversion",
                    defaults=(None, None, None))


def empty():
    """The Config of no file (fresh containers: the caller adds the command line's to them)."""
    return Config({}, {}, [], None, {}, None)


def load(path):
    """The Config in the file. Raises UsageError."""
    try:
        st = os.stat(path)
        with open(path) as f:
            obj = json.load(f)
    except OSError as exc:
        raise UsageError("cannot read the config file %s: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise UsageError("the config file %s is not JSON: %s" % (path, exc)) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError("the config file %s holds runtime tokens and is readable by others: chmod 600 %s"
                         % (path, path))
    if not isinstance(obj, dict) or set(obj) - KEYS:
        raise UsageError("the config file %s: an object with only %s" % (path, ", ".join(sorted(KEYS))))
    tokens, bindings = {}, {}
    runtimes = obj.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise UsageError("%s: \"runtimes\" maps runtime ids to {\"token\", \"fays\"}" % path)
    for rid, r in runtimes.items():
        if not isinstance(r, dict) or set(r) - {"token", "fays"} or not isinstance(r.get("token"), str) \
                or len(r["token"]) < MIN_TOKEN:
            raise UsageError("%s: runtime %r needs a \"token\" of %d characters or more, and optionally \"fays\""
                             % (path, rid, MIN_TOKEN))
        tokens[rid] = r["token"]
        if "fays" in r:
            if not isinstance(r["fays"], list) or not all(isinstance(f, str) for f in r["fays"]):
                raise UsageError("%s: runtime %r: \"fays\" is a list of Fay ids" % (path, rid))
            bindings[rid] = list(r["fays"])
    liveness = obj.get("liveness", {})
    if not isinstance(liveness, dict) or not all(isinstance(v, str) for v in liveness.values()):
        raise UsageError("%s: \"liveness\" maps a resource class to \"INTERVAL_MS/TIMEOUT_MS\"" % path)
    leeway = obj.get("leeway")
    if leeway is not None and type(leeway) is not int:
        raise UsageError("%s: \"leeway\" is a number of seconds" % path)
    max_busy = obj.get("max_busy_ms")
    if max_busy is not None and (type(max_busy) is not int or not 0 <= max_busy <= MAX_BUSY_LIMIT_MS):
        raise UsageError("%s: \"max_busy_ms\" is a number of milliseconds, 0..%d" % (path, MAX_BUSY_LIMIT_MS))
    board = boardconfig.parse(obj.get("board", {}), "%s: \"board\"" % path)
    from capwarden.engine import online

    trust = online.parse_settings(obj.get("trust"), "%s: \"trust\"" % path)
    from capwarden.engine import policyconfig

    handover = policyconfig.parse(obj.get("handover"), "%s: \"handover\"" % path, os.path.dirname(path))
    from capwarden.engine.conversion import Converter

    conversion = Converter.from_config(obj.get("conversion"), "%s: \"conversion\"" % path)
    return Config(tokens, bindings, ["%s=%s" % kv for kv in liveness.items()], leeway, board, max_busy, trust,
                  handover, conversion)
