"""Shared code: the same vector tests under CPython (in-process) and under MicroPython."""

import os
import sys

import pytest

import mpharness

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(mpharness.ROOT, "shared"))
sys.path.insert(0, HERE)

import mp_vectors  # noqa: E402

NAMES = mpharness.collect(os.path.join(HERE, "mp_vectors.py"))


@pytest.mark.parametrize("name", NAMES)
def test_under_cpython(name):
    getattr(mp_vectors, name)()


@pytest.mark.micropython
@pytest.mark.parametrize("name", NAMES)
def test_under_micropython(name):
    failure = mpharness.run(os.path.join(HERE, "mp_vectors.py"), name, paths=mpharness.SHARED_PATH)
    assert failure is None, failure


def test_wire_module_is_generated_from_the_table():
    """wire.py (the device's view) must say exactly what messages.py says."""
    from capshared import wiregen

    with open(os.path.join(mpharness.ROOT, "shared", "capshared", "wire.py")) as f:
        assert f.read() == wiregen.generate(), "run: python -m capshared.wiregen > shared/capshared/wire.py"


def test_error_numbers_unique_and_explained():
    from capshared import errors

    assert len(errors.CODE) == len(errors.NAME) == len(errors.TABLE)
    assert all(0 < n < 256 for n in errors.NAME)
    for api in errors.DEVICE_TO_API.values():
        assert api in errors.CODE and errors.CODE[api] < 64
