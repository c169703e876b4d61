"""Where the files capwarden ships beside its code are: the runtime API's JSON schema, the device
agent, the shared wire code deployed to boards, and the board descriptions.

The one home for these paths: every module that needs one asks here. They are read through
importlib.resources in both layouts:

- installed from a wheel or sdist: package data under capwarden/data/ (schema/, device/,
  boards/), copied there by setup.py's build step from the repository's folders;
- a source checkout or an editable install: capwarden/data/ does not exist, and the
  repository's own folders (shared/schema, device, boards) are used, so an edit is live.

The shared wire code is the capshared package itself in both layouts. capwarden runs from a
file system (pip never installs it zipped), so each function returns a path string.
"""

import os
from importlib.resources import files

# The package-data folder's name inside capwarden (setup.py writes it; MANIFEST.in has the sources).
DATA = "data"


def _data(*parts):
    """The path of a shipped file or folder: package data when installed, else the checkout's."""
    package = files("capwarden")
    shipped = package.joinpath(DATA)
    if shipped.is_dir():
        return os.path.join(str(shipped), *parts)
    # host/capwarden -> the repository root, where schema/ lives under shared/.
    root = os.path.dirname(os.path.dirname(str(package)))
    if parts[0] == "schema":
        parts = ("shared",) + parts
    return os.path.join(root, *parts)


def schema_path():
    """The runtime API's JSON schema (v1)."""
    return _data("schema", "v1", "schema.json")


def device_dir():
    """The MicroPython device agent (the folder holding main.py and capagent/)."""
    return _data("device")


def shared_dir():
    """The capshared package as deployed to boards."""
    return str(files("capshared"))


def boards_dir():
    """The board descriptions (one folder per board)."""
    return _data("boards")


def handover_model_path(name):
    """A shipped handover-ranking model (the repository's models/ folder; issue 15)."""
    return _data("models", name)
