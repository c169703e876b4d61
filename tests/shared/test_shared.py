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


def test_names_are_derived_from_the_numbers_in_limits():
    """CLASSES, REASONS and RES_STATE_NAMES name limits' CLS_*, R_* and RES_* numbers: one table,
    the one the firmware build folds into the device code. The names are the protocol's."""
    from capshared import limits, names

    assert names.CLASSES == ("other", "camera", "motor", "gps", "storage", "sensor", "led")
    assert names.REASONS == ("none", "released", "lease_expired", "removed", "fault", "handover", "failsafe",
                             "session_ended", "reboot", "replugged", "watchdog", "override")
    assert names.RES_STATE_NAMES == ("absent", "present", "fault")
    assert names.CLASSES[limits.CLS_LED] == "led" and names.REASONS[limits.R_LEASE_EXPIRED] == "lease_expired"
    assert names.RES_STATE_NAMES[limits.RES_FAULT] == "fault"
    # The host's old import paths still answer (capshared.limits.CLASSES, capshared.errors.CODE).
    assert limits.CLASSES is names.CLASSES and limits.mode_bits(["write"]) == limits.MODE_WRITE
    from capshared import errors, errtext

    assert errors.CODE is errtext.CODE and errors.text(errors.E_DEV_STALE_EPOCH) == errtext.TEXT["E_DEV_STALE_EPOCH"]
    try:
        limits.NO_SUCH_NAME
    except AttributeError as exc:
        assert "capshared.limits" in str(exc)
    else:
        raise AssertionError("limits answered a name nobody defines")


def test_the_credential_model_uses_the_shared_access_modes():
    from capshared.names import MODE_NAMES
    from capwarden.credentials import model

    assert model.MODES == ("read", "write", "execute", "configure")
    assert sorted(model.MODE_BIT.items()) == sorted(MODE_NAMES)


def test_no_retired_error_code_and_no_number_reused():
    """73 was E_DEV_QUEUED: never sent (a queued request gets the QUEUED message), it cost board
    RAM; retired, and not reused."""
    from capshared import errors

    assert "E_DEV_QUEUED" not in errors.CODE and 73 not in errors.NAME


def test_device_and_board_code_name_their_numbers():
    """Board descriptions and drivers give a class by its limits.CLS_* name and an OpError by its
    capshared.errors name, never a bare number (the numbers are defined once, in shared/)."""
    import re

    bad = []
    for folder in ("boards", os.path.join("device", "capagent")):
        for here, _dirs, files in os.walk(os.path.join(mpharness.ROOT, folder)):
            for f in files:
                if f.endswith(".py"):
                    with open(os.path.join(here, f)) as src:
                        for n, line in enumerate(src, 1):
                            if re.search(r"^\s*cls\s*=\s*\d|OpError\(\s*\d", line):
                                bad.append("%s:%d: %s" % (os.path.join(here, f), n, line.strip()))
    assert not bad, "\n".join(bad)
