"""Where capwarden keeps its data unless told: one rule for every store (the engine's, the
trust service's) and for its cache, the XDG base directory one."""

import os


def data_dir(env_var, name):
    """`$env_var` when it is set, else the folder `name` in the user's data home
    ($XDG_DATA_HOME, or ~/.local/share)."""
    return _xdg(env_var, "XDG_DATA_HOME", (".local", "share"), name)


def cache_dir(env_var, name):
    """`$env_var` when it is set, else the folder `name` in the user's cache home
    ($XDG_CACHE_HOME, or ~/.cache): what can be made again, kept to save the time."""
    return _xdg(env_var, "XDG_CACHE_HOME", (".cache",), name)


def _xdg(env_var, xdg_var, default, name):
    env = os.environ.get(env_var)
    if env:
        return env
    base = os.environ.get(xdg_var) or os.path.join(os.path.expanduser("~"), *default)
    return os.path.join(base, name)
