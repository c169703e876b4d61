"""A sample of the matrix as real processes (the installed entry point, its exit status), and the
argument errors of demo, sim and flash, which are refused at once rather than after starting
a board (issue 11 item 9)."""

import pytest

from clihelp import cap
from test_matrix import CASES, check

SAMPLE = ["init/folder-is-a-file", "keys-import/garbage", "issue-descriptor/unwritable", "revoke/key-missing",
          "verify/descriptor-garbage", "inspect/folder", "audit/garbage", "serve/listen-port-out-of-range",
          "serve/tls-missing", "request/ticket-missing", "request/no-engine", "ping/bad-count", "capwarden/nothing"]


@pytest.mark.parametrize("case", SAMPLE)
def test_matrix_as_a_process(here, case):
    argv, code = [(a, c) for n, a, c in CASES if n == case][0]
    check(cap(*here.fill(argv), timeout=60), code)


@pytest.mark.parametrize("argv", [
    ["sim", "--heapsize", "banana"],
    ["sim", "--baud", "-5"],
    ["sim", "--board", "nosuchboard"],
    ["demo", "--heapsize", "banana"],
    ["demo", "--bogus"],
    ["flash", "--port", "/dev/null"],
    ["flash", "--port", "/dev/capwarden-no-such-port", "--board", "nosuchboard"],
], ids=" ".join)
def test_board_commands_refuse_bad_arguments_at_once(argv):
    r = cap(*argv, timeout=30)         # a board started before the check would take longer than this
    check(r, 2)
    r = cap(*argv, "--json", timeout=30)
    check(r, 2)
    assert r.json()["exit_code"] == 2
