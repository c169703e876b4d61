import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clihelp import Inputs  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One folder of inputs per test module (the commands under test only read them, or write
    new files), and the cwd set to it for each test."""
    cwd = os.getcwd()
    made = Inputs(str(tmp_path_factory.mktemp("inputs")))
    os.chdir(cwd)
    return made


@pytest.fixture
def here(inputs):
    cwd = os.getcwd()
    os.chdir(inputs.folder)
    yield inputs
    os.chdir(cwd)
