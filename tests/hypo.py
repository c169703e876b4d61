"""Example counts that follow the hypothesis profile (tests/conftest.py): a test that needs more
inputs than the default asks for examples(n), n under `make test` and as many times more under
`make chaos` as the chaos profile has more than the default."""

from hypothesis import settings

DEFAULT_EXAMPLES = 100   # the default profile's max_examples (tests/conftest.py)


def examples(n):
    return n * settings.default.max_examples // DEFAULT_EXAMPLES
