"""The credential layer: Authorization_Descriptors, Trusted_Tickets, keys, revocation.

Public API (the engine uses these):
- `Terminal.open(store)` / `Terminal.init(store, terminal_id=None)`: a terminal's store.
- `Terminal.decide_descriptor(descriptor_id, fay_id, resource_id, mode, now) -> Decision`
  for a stored descriptor (signature verified once per key set); `Terminal.validator
  .check_descriptor(bytes, ...)` and `.check_ticket(token, ...)` for presented credentials.
- `Decision`: granted, error_code (S2 name or None), message, field, credential_id,
  issuer_id, not_after, granted_modes (for the resource), key_id, kind.
- `Terminal.import_revocation(bytes, now)`; `Terminal.revocations.listeners` get each new
  revocation entry ({"target", "issuer_id", ...}); `Terminal.revocations.revoked(issuer, id)`.
- `Terminal.convert_ticket(token, now)`, `Terminal.purge(now)`.

Modules: cbor (deterministic CBOR), ids, patterns, model (chapter 2 structures), keys
(Ed25519/P-256), b64, jws (tickets), keystore, revocation, validate (S2 order), store (atomic,
sealed files), issue (minting), terminal (the store folder).
"""

from capwarden.credentials.terminal import Terminal
from capwarden.credentials.validate import Decision, Validator

__all__ = ["Terminal", "Decision", "Validator"]
