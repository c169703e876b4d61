"""Example counts that follow the hypothesis profile (tests/conftest.py): a test that needs more
inputs than the default asks for examples(n): n under `make test`; under `make chaos` the chaos
profile's count, or n if that is more (scaling n itself made one schema test, checked against the
pure-Python jsonschema, run 75,000 examples and `make chaos` take over an hour)."""

from hypothesis import settings

DEFAULT_EXAMPLES = 100   # the default profile's max_examples (tests/conftest.py)


def examples(n):
    profile = settings.default.max_examples
    return n if profile <= DEFAULT_EXAMPLES else max(n, profile)
