"""The shipped JSON Schema, compiled once into plain Python checks.

jsonschema takes about 80 us per message for our schema; every request pays it twice (the SDK
checks before sending, the engine on receipt), which was a tenth of an AuthRequest's round trip.
This compiles the subset of JSON Schema 2020-12 the file uses (type, const, enum, pattern,
minLength, maxLength, minimum, maximum, properties, required, additionalProperties: false,
items, maxItems, oneOf, $ref into $defs) into closures, once. Anything else in the schema is
refused when compiling, so the schema cannot silently grow a keyword this does not check; a test
compares verdicts with jsonschema on mutated messages.

One deliberate difference: `pattern` follows ECMA-262, where `$` is the end of the input;
Python's `re` (and so jsonschema) also lets `$` match before a final newline.

Each compiled check first runs a predicate generated as Python source from the same schema
(`compile_predicate`: plain `if` statements, no paths built, no exceptions): a valid message,
the common case, costs that alone (about 2 us instead of 7 for an AuthRequest). Only when the
predicate says no do the closures above run, to name the first problem; a test holds the two
to the same verdict.
"""

import re

SUPPORTED = {"type", "const", "enum", "pattern", "minLength", "maxLength", "minimum", "maximum", "properties",
             "required", "additionalProperties", "items", "maxItems", "oneOf", "$ref",
             "description", "title", "$schema", "$id"}     # the last four are annotations


class Invalid(ValueError):
    """`where` (a path like body/credential) and what is wrong there."""

    def __init__(self, where, what):
        super().__init__("%s: %s" % (where or "message", what))


def _is_int(v):
    return (type(v) is int) or (type(v) is float and v.is_integer())


_TYPES = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "integer": _is_int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
}


def _same(a, b):
    # JSON equality: 1 == True in Python, not in JSON.
    return type(a) is type(b) and a == b or (_is_int(a) and _is_int(b) and type(a) is not bool
                                             and type(b) is not bool and a == b)


def compile_schema(node, defs):
    """A function check(value, where="") raising Invalid, for one schema node. Raises ValueError
    for a keyword this module does not check."""
    slow = _compile(node, defs)
    fast = compile_predicate(node, defs)

    def check(v, where=""):
        if not fast(v):
            slow(v, where)
    return check


def _compile(node, defs):
    unknown = set(node) - SUPPORTED
    if unknown:
        raise ValueError("schema keyword(s) not supported by schemacheck: %s" % ", ".join(sorted(unknown)))
    checks = []
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        box = []
        checks.append(lambda v, w: (box or box.append(_compile(defs[name], defs)) or box)[0](v, w))
    if "type" in node:
        t, ok = node["type"], _TYPES[node["type"]]
        checks.append(lambda v, w: ok(v) or _fail(w, "%s is not of type %r" % (_short(v), t)))
    if "const" in node:
        c = node["const"]
        checks.append(lambda v, w: _same(v, c) or _fail(w, "%r was expected" % (c,)))
    if "enum" in node:
        options = node["enum"]
        checks.append(lambda v, w: any(_same(v, o) for o in options) or _fail(w, "%s is not one of %r" % (
            _short(v), options)))
    if "pattern" in node:
        p = node["pattern"]
        rx = re.compile(p[:-1] + r"\Z" if p.endswith("$") and not p.endswith("\\$") else p)
        checks.append(lambda v, w: type(v) is not str or rx.search(v) or _fail(w, "%s does not match %r" % (
            _short(v), p)))
    for key, test, say in (("minLength", lambda v, n: len(v) >= n, "is too short"),
                           ("maxLength", lambda v, n: len(v) <= n, "is too long")):
        if key in node:
            n = node[key]
            checks.append(lambda v, w, n=n, test=test, say=say: type(v) is not str or test(v, n) or _fail(
                w, "%s %s" % (_short(v), say)))
    for key, test, say in (("minimum", lambda v, n: v >= n, "is less than the minimum of %s"),
                           ("maximum", lambda v, n: v <= n, "is greater than the maximum of %s")):
        if key in node:
            n = node[key]
            checks.append(lambda v, w, n=n, test=test, say=say: type(v) not in (int, float) or test(v, n)
                          or _fail(w, "%r %s" % (v, say % n)))
    if "properties" in node or "required" in node or "additionalProperties" in node:
        checks.append(_object(node, defs))
    if "items" in node or "maxItems" in node:
        checks.append(_array(node, defs))
    if "oneOf" in node:
        branches = [_compile(b, defs) for b in node["oneOf"]]
        checks.append(lambda v, w: _one_of(branches, v, w))

    def check(v, where=""):
        for c in checks:
            c(v, where)
    return check


def _object(node, defs):
    props = {k: _compile(s, defs) for k, s in node.get("properties", {}).items()}
    required = node.get("required", [])
    closed = node.get("additionalProperties", True) is False

    def check(v, where):
        if type(v) is not dict:
            return
        for k in required:
            if k not in v:
                _fail(where, "%r is a required property" % k)
        for k, item in v.items():
            sub = props.get(k)
            if sub is not None:
                sub(item, _join(where, k))
            elif closed:
                _fail(where, "additional properties are not allowed (%r was unexpected)" % (k,))
    return check


def _array(node, defs):
    item = _compile(node["items"], defs) if "items" in node else None
    most = node.get("maxItems")

    def check(v, where):
        if type(v) is not list:
            return
        if most is not None and len(v) > most:
            _fail(where, "too many items (%d, at most %d)" % (len(v), most))
        if item is not None:
            for i, x in enumerate(v):
                item(x, _join(where, i))
    return check


def _one_of(branches, v, where):
    ok = 0
    for b in branches:
        try:
            b(v, where)
            ok += 1
        except Invalid:
            pass
    if ok != 1:
        _fail(where, "%s is not valid under exactly one of the given schemas" % (_short(v),))


def _join(where, key):
    return "%s/%s" % (where, key) if where else str(key)


def _short(v):
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _fail(where, what):
    raise Invalid(where, what)


# ---- the predicate: the same schema as Python source ------------------------------------------

_TYPE_EXPR = {
    "object": "type(v) is dict",
    "array": "type(v) is list",
    "string": "type(v) is str",
    "integer": "(type(v) is int or (type(v) is float and v.is_integer()))",
    "number": "(type(v) is int or type(v) is float)",
    "boolean": "type(v) is bool",
}


def compile_predicate(node, defs):
    """A function valid(value) -> bool with the verdict of compile_schema(node, defs), generated
    as Python source once. Raises ValueError for a keyword this module does not check."""
    gen = _Generator(defs)
    top = gen.function(node)
    namespace = dict(gen.consts, _same=_same)
    exec(compile("\n".join(gen.lines), "<schemacheck>", "exec"), namespace)   # noqa: S102 (our own source)
    return namespace[top]


class _Generator:
    def __init__(self, defs):
        self.defs = defs
        self.lines = []
        self.consts = {}
        self.refs = {}

    def const(self, value):
        name = "K%d" % len(self.consts)
        self.consts[name] = value
        return name

    def ref(self, name):
        if name not in self.refs:
            self.refs[name] = fname = self.new_name()       # named first: a recursive $ref finds it
            self.function(self.defs[name], fname)
        return self.refs[name]

    def new_name(self):
        self.count = getattr(self, "count", 0) + 1
        return "F%d" % self.count

    def function(self, node, name=None):
        name = name or self.new_name()
        unknown = set(node) - SUPPORTED
        if unknown:
            raise ValueError("schema keyword(s) not supported by schemacheck: %s" % ", ".join(sorted(unknown)))
        body = []
        if "$ref" in node:
            body.append("if not %s(v): return False" % self.ref(node["$ref"].rsplit("/", 1)[-1]))
        if "type" in node:
            body.append("if not %s: return False" % _TYPE_EXPR[node["type"]])
        if "const" in node:
            c = node["const"]
            if type(c) is str:
                body.append("if type(v) is not str or v != %s: return False" % self.const(c))
            else:
                body.append("if not _same(v, %s): return False" % self.const(c))
        if "enum" in node:
            options = node["enum"]
            if all(type(o) is str for o in options):
                body.append("if type(v) is not str or v not in %s: return False" % self.const(frozenset(options)))
            else:
                body.append("if not any(_same(v, o) for o in %s): return False" % self.const(tuple(options)))
        if "pattern" in node:
            p = node["pattern"]
            rx = re.compile(p[:-1] + r"\Z" if p.endswith("$") and not p.endswith("\\$") else p)
            body.append("if type(v) is str and %s(v) is None: return False" % self.const(rx.search))
        if "minLength" in node:
            body.append("if type(v) is str and len(v) < %d: return False" % node["minLength"])
        if "maxLength" in node:
            body.append("if type(v) is str and len(v) > %d: return False" % node["maxLength"])
        for key, op in (("minimum", ">="), ("maximum", "<=")):
            if key in node:        # "not (v >= m)", so that NaN fails as it does in the closures
                body.append("if (type(v) is int or type(v) is float) and not (v %s %s): return False" % (
                    op, self.const(node[key])))
        if "properties" in node or "required" in node or "additionalProperties" in node:
            props = {k: self.function(sub) for k, sub in node.get("properties", {}).items()}
            closed = node.get("additionalProperties", True) is False
            body.append("if type(v) is dict:")
            for k in node.get("required", []):
                body.append("    if %s not in v: return False" % self.const(k))
            table = self.const(dict((k, None) for k in props))
            body.append("    for k, x in v.items():")
            body.append("        s = %s.get(k)" % table)
            body.append("        if s is None:")
            body.append("            %s" % ("return False" if closed else "continue"))
            body.append("        if not s(x): return False")
            self._bind(table, props)
        if "items" in node or "maxItems" in node:
            body.append("if type(v) is list:")
            if "maxItems" in node:
                body.append("    if len(v) > %d: return False" % node["maxItems"])
            if "items" in node:
                body.append("    for x in v:")
                body.append("        if not %s(x): return False" % self.function(node["items"]))
        if "oneOf" in node:
            branches = [self.function(b) for b in node["oneOf"]]
            body.append("n = 0")
            for b in branches:
                body.append("if %s(v): n += 1" % b)
            body.append("if n != 1: return False")
        self.lines.append("def %s(v):\n    %s\n    return True" % (name, "\n    ".join(body) or "pass"))
        return name

    def _bind(self, table, props):
        # The property table maps names to generated functions, known only once exec'd: bound by
        # a line that runs after every def.
        self.lines.append("%s.update({%s})" % (table, ", ".join("%r: %s" % (k, f) for k, f in props.items())))
