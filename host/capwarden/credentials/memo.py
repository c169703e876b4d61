"""Bounded memo tables for pure functions of short strings.

Validation memoises what depends only on a string (identifier checks, pattern parsing, JWS
headers, Resource_ID splitting), never anything about a credential's validity. A table that
reaches LIMIT entries is emptied rather than evicted piecemeal: a table full of one attacker's
strings costs one refill, and memory stays bounded by LIMIT times the longest key stored.
"""

LIMIT = 4096


def remember(table, key, value=True):
    """Store key -> value in the dict `table`, emptying it first when full. Returns value."""
    if len(table) >= LIMIT:
        table.clear()
    table[key] = value
    return value
