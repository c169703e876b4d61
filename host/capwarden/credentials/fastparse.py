"""The descriptor fast path: step 1 of S2 for the common, valid case, in as few steps as CPython allows.

`descriptor(data)` returns a model.Descriptor when the file is a deterministic, well-formed
descriptor in the layout cborscan recognises and every field passes chapter 2's rules, and None
for anything else. None is not a verdict: the caller then runs the reference parser
(cbor.decode + model.parse_descriptor_obj), which refuses with the precise S2 code and field
name, or accepts the rare valid shapes this path leaves alone (grant constraints, text with
non-printable characters, long metadata). So this path can only ever accept a subset of what
the reference parser accepts, with the same fields; tests/credentials/test_fastparse.py checks
exactly that, against mutated and re-encoded files, for the compiled and the interpreted scanner.

cborscan reads the bytes (determinism included); this module applies chapter 2's value rules.
Pure functions of short strings (identifier checks, pattern parsing, grant construction) are
memoised in bounded tables. Nothing about a credential's validity is cached: each file is
checked whole.
"""

import importlib
import importlib.util
import os

from capwarden.credentials import patterns
from capwarden.credentials.ids import FAY_RE, TERMINAL_RE, uuid_text
from capwarden.credentials.memo import remember
from capwarden.credentials.model import (MAX_KEY_ID, MAX_MAP, MAX_MAP_KEY, MAX_MAP_VALUE, MAX_STR, MAX_TS, MODES,
                                         Descriptor, Grant)


def _load_scanner():
    """cborscan compiled by mypyc if the build made it and it is not older than its source;
    otherwise the source itself (an edit after the build must never be shadowed)."""
    mod = importlib.import_module("capwarden.credentials.cborscan")
    where = mod.__file__ or ""
    if where.endswith(".py"):
        return mod, False
    source = os.path.join(os.path.dirname(where), "cborscan.py")
    if os.path.exists(source) and os.path.getmtime(source) > os.path.getmtime(where):
        return load_source(source), False
    return mod, True


def load_source(path):
    """The scanner module run from its source file (also used by the tests)."""
    spec = importlib.util.spec_from_file_location("capwarden.credentials._cborscan_source", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cborscan, COMPILED = _load_scanner()
_scan = cborscan.scan_descriptor
_PAYLOAD_START = len(cborscan.FILE_HEAD)
_MODES = frozenset(MODES)
_GRANTS = {}      # (resource_pattern, modes) -> Grant, for valid grants only
# Strings already known to pass a check (text rules; Fay_ID; Terminal_ID; key_id): identifiers
# repeat across descriptors, and the checks are pure functions of the string.
_TEXTS = {}
_FAYS = {}
_TERMINALS = {}
_KEY_IDS = {}


def _text(v, limit=MAX_STR):
    # isprintable() is False for every C0 control and DEL (and a few more characters, which the
    # reference parser then judges): a printable string has nothing the model refuses.
    return 0 < len(v) <= limit and v.isprintable()


def _grant(pattern, modes):
    """The Grant for a pattern and its modes (as scanned), or None when this path declines."""
    key = (pattern, modes)
    hit = _GRANTS.get(key)
    if hit is not None:
        return hit
    if len(set(modes)) != len(modes) or not _MODES.issuperset(modes) or not _text(pattern):
        return None
    try:
        return remember(_GRANTS, key, Grant(pattern, modes, None))
    except patterns.PatternError:
        return None


def _metadata_ok(md):
    if len(md) > MAX_MAP:
        return False
    for k, x in md.items():
        if not k or len(k) > MAX_MAP_KEY or len(x) > MAX_MAP_VALUE:
            return False
    return True


def descriptor(data):
    """A model.Descriptor for a descriptor file this path can check completely, else None."""
    if type(data) is not bytes:
        return None
    f = _scan(data)
    if f is None:
        return None
    (alg, key_id, sig, did, issuer, subject, terminal, raw_grants, issued_at, not_before, not_after, grantor,
     metadata, payload_end) = f
    if key_id not in _KEY_IDS:
        if not _text(key_id, MAX_KEY_ID):
            return None
        remember(_KEY_IDS, key_id)
    if len(did) != 16 or did[6] >> 4 != 7 or did[8] >> 6 != 2:
        return None
    if issuer not in _TEXTS:
        if not _text(issuer):
            return None
        remember(_TEXTS, issuer)
    if subject not in _FAYS:
        if not _text(subject) or FAY_RE.match(subject) is None:
            return None
        remember(_FAYS, subject)
    if terminal not in _TERMINALS:
        if not _text(terminal) or TERMINAL_RE.match(terminal) is None:
            return None
        remember(_TERMINALS, terminal)
    if not 0 <= issued_at <= not_before < not_after <= MAX_TS:
        return None
    grants = []
    for pattern, modes in raw_grants:
        grant = _grant(pattern, modes)
        if grant is None:
            return None
        grants.append(grant)
    if grantor is not None and not _text(grantor):
        return None
    if metadata is not None and not _metadata_ok(metadata):
        return None
    d = Descriptor()
    d.algorithm = alg
    d.key_id = key_id
    d.signature = sig
    d.credential_id = uuid_text(did)
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
    d.signed_bytes = data[_PAYLOAD_START:payload_end]
    return d
