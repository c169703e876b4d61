"""Where the files capwarden ships beside its code are: the runtime API's JSON schema, the device
agent, the shared wire code deployed to boards, and the board descriptions.

The one home for these paths: every module that needs one asks here. In a source checkout (and
an editable install) they are the repository's folders; in an installed wheel they are package
data (issue 11 moves them there).
"""

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def schema_path():
    """The runtime API's JSON schema (v1)."""
    return os.path.join(_ROOT, "shared", "schema", "v1", "schema.json")


def device_dir():
    """The MicroPython device agent (the folder holding main.py and capagent/)."""
    return os.path.join(_ROOT, "device")


def shared_dir():
    """The capshared package as deployed to boards."""
    return os.path.join(_ROOT, "shared", "capshared")


def boards_dir():
    """The board descriptions (one folder per board)."""
    return os.path.join(_ROOT, "boards")
