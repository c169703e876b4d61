"""The descriptor fast path: step 1 of S2 for the common, valid case, in as few steps as CPython allows.

`descriptor(data)` returns a model.Descriptor when the file is a deterministic, well-formed
descriptor it can check completely, and None for anything else. None is not a verdict: the
caller then runs the reference parser (cbor.decode + model.parse_descriptor_obj), which refuses
with the precise S2 code and field name, or accepts the rare valid shapes this path leaves
alone (grant constraints, text with non-printable characters). So this
path can only ever accept a subset of what the reference parser accepts, with the same fields;
tests/credentials/test_fastparse.py checks exactly that against mutated and re-encoded files.

Why it is faster than the reference, and why it is as strict:
- Determinism (S1) without a canonical re-encode. cbor2's canonical mode sorts keys in Python
  and costs three times its plain encoder. Here every map's key tuple is compared with the one
  deterministic order the spec's fields can have (one tuple comparison per map); then the plain
  encoder re-encodes the decoded value in the order it was read and the result must equal the
  input. With key order known to be right, the only other differences the plain encoder can
  show are the ones S1 forbids: non-minimal heads, indefinite lengths, duplicate keys (the
  decoded map loses one, the re-encoding is shorter) and trailing bytes.
- Types are checked on the values the model needs, which are all of them: a file with any
  value of another type (tag, float, bool, null) fails one of the checks below.
- The signed payload bytes are a slice of the input (the file is a3 "payload" P "version" 01
  "signature" S), not a second encoding; what is verified is what was received.
- Pure functions of short strings (pattern parsing, grant construction) are memoised in
  bounded tables. Nothing about a credential's validity is cached: each file is checked whole.
"""

import cbor2

from capwarden.credentials import patterns
from capwarden.credentials.ids import FAY_RE, TERMINAL_RE
from capwarden.credentials.keys import ALGORITHMS
from capwarden.credentials.model import (MAX_DESCRIPTOR, MAX_GRANTS, MAX_KEY_ID, MAX_MAP, MAX_MAP_KEY, MAX_MAP_VALUE,
                                         MAX_STR, MAX_TS, MODES, Descriptor, Grant)



def _order(keys):
    """Keys in deterministic order: RFC 8949 4.2.1 bytewise order of their encodings, which for
    text keys is shorter first, then bytewise (pinned by tests/credentials/test_cbor.py)."""
    return tuple(sorted(keys, key=lambda k: (len(k.encode()), k.encode())))


_TOP = _order(("version", "payload", "signature"))
_SIG = _order(("algorithm", "key_id", "signature_value"))
_GRANT = _order(("resource_pattern", "modes"))
_REQUIRED = ("descriptor_id", "issuer_id", "subject_fay_id", "terminal_id", "grants", "issued_at",
             "not_before", "not_after")
# Every key tuple a payload may have, with which optional fields it carries.
_PAYLOADS = {
    _order(_REQUIRED): (False, False),
    _order(_REQUIRED + ("grantor_id",)): (True, False),
    _order(_REQUIRED + ("metadata",)): (False, True),
    _order(_REQUIRED + ("grantor_id", "metadata")): (True, True),
}
_HEAD = b"\xa3" + cbor2.dumps("payload")
_VERSION = cbor2.dumps("version") + b"\x01" + cbor2.dumps("signature")
_ALGS = frozenset(ALGORITHMS)
# The file after the payload: "version" 01 "signature" {"key_id": K, "algorithm": A,
# "signature_value": 64 bytes}, in that (deterministic) order.
_TAIL_HEAD = _VERSION + b"\xa3" + cbor2.dumps(_SIG[0])      # "key_id"
_ALGORITHM_KEY = cbor2.dumps(_SIG[1])                      # "algorithm"
_TAIL_SIG = cbor2.dumps(_SIG[2]) + b"\x58\x40"             # "signature_value", 64 bytes follow
_KEY_ALG = {}     # (key_id, algorithm) -> encoding of key_id, "algorithm", algorithm; valid ones
_MODE_SETS = {}   # tuple of modes as written -> the same tuple, when valid (1..4 distinct modes)
_GRANTS = {}      # (resource_pattern, modes) -> Grant, for valid grants only
# Strings already known to pass a check (text rules; Fay_ID; Terminal_ID): identifiers
# repeat across descriptors, and the checks are pure functions of the string.
_TEXTS = set()
_FAYS = set()
_TERMINALS = set()
_CACHE_LIMIT = 4096


def _remember(table, value):
    if len(table) >= _CACHE_LIMIT:
        table.clear()
    table.add(value)


def _text(v, limit=MAX_STR):
    # isprintable() is False for every C0 control and DEL (and a few more characters, which the
    # reference parser then judges): a printable string has nothing the model refuses.
    return type(v) is str and 0 < len(v) <= limit and v.isprintable()


def _grant(g):
    """The Grant for one decoded grant map, or None when this path does not accept it."""
    if type(g) is not dict or tuple(g) != _GRANT:
        return None
    pattern = g["resource_pattern"]
    modes = g["modes"]
    if type(modes) is not list or type(pattern) is not str:
        return None
    key = (pattern, tuple(modes))
    hit = _GRANTS.get(key)
    if hit is not None:
        return hit
    m = key[1]
    if not 1 <= len(m) <= 4 or len(set(m)) != len(m):
        return None
    for x in m:
        if type(x) is not str or x not in MODES:
            return None
    if not _text(pattern):
        return None
    try:
        grant = Grant(pattern, m, None)
    except patterns.PatternError:
        return None
    if len(_GRANTS) >= _CACHE_LIMIT:
        _GRANTS.clear()
    _GRANTS[key] = grant
    return grant


def _metadata(v):
    """A copy of a metadata map this path accepts (the reference parser's rules, keys in order)."""
    if type(v) is not dict or len(v) > MAX_MAP:
        return None
    keys = tuple(v)
    if keys != _order(keys):
        return None
    for k, x in v.items():
        if type(k) is not str or type(x) is not str or not k or len(k) > MAX_MAP_KEY or len(x) > MAX_MAP_VALUE:
            return None
    return dict(v)


def _uuid_text(b):
    # ids.uuid_text's result (str(uuid.UUID(bytes=b))) at a third of its cost.
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def descriptor(data):
    """A model.Descriptor for a descriptor file this path can check completely, else None."""
    if type(data) is not bytes or len(data) > MAX_DESCRIPTOR or not data.startswith(_HEAD):
        return None
    try:
        obj = cbor2.loads(data)
    except Exception:  # cbor2 raises several types; the reference parser names the problem
        return None
    if type(obj) is not dict or tuple(obj) != _TOP or type(obj["version"]) is not int or obj["version"] != 1:
        return None
    p = obj["payload"]
    s = obj["signature"]
    if type(p) is not dict or type(s) is not dict or tuple(s) != _SIG:
        return None
    optional = _PAYLOADS.get(tuple(p))
    if optional is None:
        return None
    alg = s["algorithm"]
    key_id = s["key_id"]
    sig = s["signature_value"]
    if type(alg) is not str or alg not in _ALGS or type(key_id) is not str or type(sig) is not bytes or \
            len(sig) != 64:
        return None
    middle = _KEY_ALG.get((key_id, alg))
    if middle is None:
        if not _text(key_id, MAX_KEY_ID):
            return None
        # The signature map's encoding between its "key_id" key and its "signature_value" key.
        middle = cbor2.dumps(key_id) + _ALGORITHM_KEY + cbor2.dumps(alg)
        if len(_KEY_ALG) >= _CACHE_LIMIT:
            _KEY_ALG.clear()
        _KEY_ALG[(key_id, alg)] = middle
    did = p["descriptor_id"]
    if type(did) is not bytes or len(did) != 16 or did[6] >> 4 != 7 or did[8] >> 6 != 2:
        return None
    issuer = p["issuer_id"]
    subject = p["subject_fay_id"]
    terminal = p["terminal_id"]
    if type(issuer) is not str or type(subject) is not str or type(terminal) is not str:
        return None
    if issuer not in _TEXTS:
        if not _text(issuer):
            return None
        _remember(_TEXTS, issuer)
    if subject not in _FAYS:
        if not _text(subject) or FAY_RE.match(subject) is None:
            return None
        _remember(_FAYS, subject)
    if terminal not in _TERMINALS:
        if not _text(terminal) or TERMINAL_RE.match(terminal) is None:
            return None
        _remember(_TERMINALS, terminal)
    issued_at = p["issued_at"]
    not_before = p["not_before"]
    not_after = p["not_after"]
    if type(issued_at) is not int or type(not_before) is not int or type(not_after) is not int or \
            not 0 <= issued_at <= not_before < not_after <= MAX_TS:
        return None
    raw_grants = p["grants"]
    if type(raw_grants) is not list or not 1 <= len(raw_grants) <= MAX_GRANTS:
        return None
    grants = []
    for g in raw_grants:
        grant = _grant(g)
        if grant is None:
            return None
        grants.append(grant)
    grantor = metadata = None
    if optional[0]:
        grantor = p["grantor_id"]
        if not _text(grantor):
            return None
    if optional[1]:
        metadata = _metadata(p["metadata"])
        if metadata is None:
            return None
    # Determinism: key order was checked map by map above, so the plain encoder (which keeps the
    # order it was given) re-encodes the payload deterministically. Around it, the file can only
    # be the fixed envelope with this signature map in it. The whole must equal the input.
    signed = cbor2.dumps(p)
    if _HEAD + signed + _TAIL_HEAD + middle + _TAIL_SIG + sig != data:
        return None
    d = Descriptor()
    d.algorithm = alg
    d.key_id = key_id
    d.signature = sig
    d.credential_id = _uuid_text(did)
    d.issuer_id = issuer
    d.subject = subject
    d.terminal_id = terminal
    d.grants = tuple(grants)
    d.issued_at = issued_at
    d.not_before = not_before
    d.not_after = not_after
    d.grantor_id = grantor
    d.metadata = metadata
    d.convertible = False
    d.raw = data
    d.signed_bytes = signed
    return d
