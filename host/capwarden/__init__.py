"""capwarden: the CAP Protocol_Engine (host side).

Folders name the architecture: `credentials/` checks who may control what, `engine/` runs
sessions and the runtime API, `link/` talks to boards, `sim/` is the virtual board, `cli/`
is the command line.
"""

__version__ = "0.1.0"
