"""Firmware build step: fold the shared protocol constants into each device module.

On MicroPython a module-level `_NAME = const(42)` costs no RAM (the compiler folds it), but only
inside its own module; constants imported from capshared.wire, .errors and .limits are module
globals that cost board RAM for every name and a dictionary lookup on every use. So when the
firmware is staged, each device module's `from capshared.X import NAME` (and `from capshared
import wire as W` with `W.NAME`) becomes a private `_NAME = const(value)` in that module.

The numbers stay defined once, in shared/capshared; this only changes how a board loads them.
Device tests import the staged firmware (tests/mpharness.py), so they test this output.
"""

import ast
import re

from capshared import errors, limits, linkauth, wire

SOURCES = {"capshared.wire": wire, "capshared.errors": errors, "capshared.limits": limits,
           "capshared.linkauth": linkauth}

# Deployed modules whose own `NAME = const(...)` become private on the board (`_NAME`): a public
# const is a module global (a dict entry and an interned name each), a private one is folded
# away. Modules that import those names get them folded in as above (issue 12: board RAM).
OWN_CONSTANTS = {"capshared/linkauth.py"}


def _foldable(value):
    return isinstance(value, (int, bytes)) and not isinstance(value, bool)


def privatise(source):
    """`source` with each module-level `NAME = const(...)` renamed `_NAME` wherever it is used."""
    for name in re.findall(r"^([A-Z][A-Z0-9_]*) = const\(", source, re.M):
        source = re.sub(r"(?<![\w.])%s(?!\w)" % name, "_" + name, source)
    return source


def _private(name):
    return name if name.startswith("_") else "_" + name


def _literal(value):
    if isinstance(value, bool) or not isinstance(value, (int, bytes)):
        raise ValueError("only int and bytes constants can be folded, got %r" % (value,))
    return "const(%d)" % value if isinstance(value, int) else repr(value)


def _parse(source, tries=3):
    """ast.parse, tried again on CPython 3.11's spurious "AST constructor recursion depth
    mismatch": the counter behind it is shared by every thread, so another thread building an
    AST at the same moment (3.11's traceback formatting parses each source line it shows)
    trips the check though this source is fine (python/cpython#106905). Parsing is
    deterministic, so a second try gives the real answer; a real error is raised as it is."""
    for attempt in range(tries):
        try:
            return ast.parse(source)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == tries - 1:
                raise


def inline(source):
    """The module's source with shared constants folded in. Raises ValueError if it cannot."""
    tree = _parse(source)
    lines = source.splitlines(keepends=True)
    direct = {}      # local name -> value
    modules = {}     # alias -> module, for `from capshared import wire as W`
    spans = []
    imports = []     # what remains of partly folded imports
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in SOURCES:
            mod = SOURCES[node.module]
            kept = []       # classes and functions stay imported (capshared.linkauth.LinkAuth)
            for a in node.names:
                value = getattr(mod, a.name)
                if _foldable(value):
                    direct[a.asname or a.name] = value
                else:
                    kept.append(a.name + (" as " + a.asname if a.asname else ""))
            spans.append((node.lineno, node.end_lineno))
            if kept:
                imports.append("from %s import %s\n" % (node.module, ", ".join(kept)))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "capshared" \
                and all("capshared." + a.name in SOURCES for a in node.names):
            for a in node.names:
                modules[a.asname or a.name] = SOURCES["capshared." + a.name]
            spans.append((node.lineno, node.end_lineno))
    if not spans:
        return source
    body = "".join(line for i, line in enumerate(lines, 1) if not any(a <= i <= b for a, b in spans))
    defs = {}
    kept_alias = set()
    for alias, mod in modules.items():
        def attr(m, alias=alias, mod=mod):
            name = m.group(1)
            if not _foldable(getattr(mod, name, None)):
                kept_alias.add(alias)       # a class or function: the module stays imported
                return m.group(0)
            folded = "_%s_%s" % (alias, name)
            defs[folded] = getattr(mod, name)
            return folded
        body = re.sub(r"(?<![\w.])%s\.([A-Za-z_]\w*)" % re.escape(alias), attr, body)
    for local, value in direct.items():
        folded = _private(local)
        if folded != local:
            body = re.sub(r"(?<![\w.])%s(?!\w)" % re.escape(local), folded, body)
        defs[folded] = value
    imports += ["from capshared import %s as %s\n" % (mod.__name__.rpartition(".")[2], alias)
                for alias, mod in modules.items() if alias in kept_alias]
    header = "from micropython import const\n" + "".join(imports) + "".join(
        "%s = %s\n" % (name, _literal(value)) for name, value in sorted(defs.items()))
    # Put the constants where the first import was, after any module comment block.
    first = spans[0][0]
    head = "".join(line for i, line in enumerate(lines, 1) if i < first and not any(a <= i <= b for a, b in spans))
    rest = body[len(head):]
    return head + header + rest
