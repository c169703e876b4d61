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
    failure = mpharness.run(os.path.join(HERE, "mp_vectors.py"), name)
    assert failure is None, failure
