"""docs/catalogue/: the fault and attack catalogue items this project cites, with their tests.

The catalogues (faults.md: numbered scenarios; attacks.md: numbered cases, a letter per
section, e.g. F59) were written outside the repository. Code and tests cite them by number:
in test names (test_fault_31_..., test_lock_01_..., test_A12_...) and in text ("faults.md 31,
49", "attacks.md I72"). This module finds every citation in the tree and writes, for each
cited item, its text and the tests that cite it, so that a test name leads to its reason.

    python tests/catalogue.py /work/shared/catalogue     # rewrite docs/catalogue/{faults,attacks}.md

tests/test_catalogue_docs.py fails when the written files no longer match the tree (a test
renamed, a new citation): run the line above again. Without the source catalogues it reads
the item texts back from docs/catalogue itself, so the check needs only the repository.
"""

import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "catalogue")
KINDS = ("faults", "attacks")
# Where a citation names a test: the test modules of every suite.
TEST_DIRS = ("tests", "hil")

_NAME = {
    "faults": re.compile(r"^test_(?:fault|lock)_0*(\d{1,3})_"),
    "attacks": re.compile(r"^test_([A-K])0*(\d{1,3})_"),
}
_TEXT = {
    "faults": re.compile(r"faults\.md((?:[ ,]+(?:and )?\d{1,3}\b)+)"),
    "attacks": re.compile(r"attacks\.md((?:[ ,]+(?:and )?[A-K]\d{1,3}\b)+)"),
}
_ITEM = re.compile(r"^(\d{1,3})\. (.*)$")
_FAULT_SECTION = re.compile(r"^\*\*(.+)\*\*$")
_ATTACK_SECTION = re.compile(r"^### ([A-K])\. (.*)$")


def _numbers(kind, text):
    if kind == "faults":
        return [int(n) for n in re.findall(r"\d{1,3}", text)]
    return [int(n) for n in re.findall(r"[A-K](\d{1,3})", text)]


def _files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(f for f in out if f.endswith(".py") and os.path.isfile(os.path.join(ROOT, f))
                  and not f.startswith("docs/"))


def _tests_by_line(path, source):
    """[(first line, last line, test name)] of the test functions of a test module."""
    if not (path.startswith(TEST_DIRS) and os.path.basename(path).startswith(("test_", "mp_"))):
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [(n.lineno, n.end_lineno, n.name) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")]


def citations():
    """{kind: {number: {"tests": set of "path::name", "cited": set of paths}}} for the tree."""
    found = {kind: {} for kind in KINDS}

    def note(kind, number, path, test=None):
        entry = found[kind].setdefault(number, {"tests": set(), "cited": set()})
        if test:
            entry["tests"].add("%s::%s" % (path, test))
        else:
            entry["cited"].add(path)

    for path in _files():
        if path == "tests/catalogue.py":
            continue
        with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
            source = f.read()
        tests = _tests_by_line(path, source)
        for _first, _last, name in tests:
            for kind in KINDS:
                m = _NAME[kind].match(name)
                if m:
                    note(kind, int(m.group(m.lastindex)), path, name)
        for lineno, line in enumerate(source.splitlines(), 1):
            for kind in KINDS:
                for m in _TEXT[kind].finditer(line):
                    test = next((name for first, last, name in tests if first <= lineno <= last), None)
                    for number in _numbers(kind, m.group(1)):
                        note(kind, number, path, test)
    return found


def parse_catalogue(kind, text):
    """[(section title, [(number, item text)])] of a catalogue (the source or the one in docs)."""
    sections = []
    head = _FAULT_SECTION if kind == "faults" else _ATTACK_SECTION
    for line in text.splitlines():
        m = head.match(line.strip())
        if m:
            sections.append((m.group(m.lastindex) if kind == "faults" else "%s. %s" % m.groups(), []))
            continue
        if line.startswith("## "):           # ours: "## Locks and modes"
            sections.append((line[3:].strip(), []))
            continue
        m = _ITEM.match(line)
        if m and sections:
            sections[-1][1].append((int(m.group(1)), m.group(2).strip()))
    return sections


_INTRO = {
    "faults": ("Fault and race scenarios cited by capwarden",
               "Scenarios are cited by number: `test_fault_31_...` and `test_lock_01_...` in test names, "
               "\"faults.md 31\" in code and comments."),
    "attacks": ("Attack and bad-input cases cited by capwarden",
                "Cases are numbered through the whole catalogue, with the letter of their section: "
                "`test_F59_...` in test names, \"attacks.md F59\" in code and comments."),
}


def render(kind, sections, found):
    title, how = _INTRO[kind]
    out = ["# %s" % title, "",
           "Generated by `python tests/catalogue.py` from the project's %s.md catalogue (see README.md): "
           "only the items the code or tests cite, with their text as written there. %s" % (kind, how), ""]
    for section, items in sections:
        cited = [(n, t) for n, t in items if n in found]
        if not cited:
            continue
        out += ["## %s" % section, ""]
        for n, text in cited:
            out.append("%d. %s" % (n, text))
            entry = found[n]
            tests = sorted(entry["tests"])
            for t in tests:
                out.append("   - tested by `%s`" % t)
            others = sorted(entry["cited"] - {t.split("::")[0] for t in tests})
            if others:
                out.append("   - cited in %s" % ", ".join("`%s`" % p for p in others))
            if not tests:
                out.append("   - no test names it")
            out.append("")
    known = {n for _s, items in sections for n, _t in items}
    missing = sorted(set(found) - known)
    if missing:
        out += ["## Cited but not in the catalogue", ""]
        out += ["- %s: %s" % (n, ", ".join("`%s`" % p for p in sorted(found[n]["tests"] | found[n]["cited"])))
                for n in missing] + [""]
    return "\n".join(out).rstrip() + "\n"


def expected(source_dir=None):
    """{file name: text} docs/catalogue should hold: item texts from `source_dir` (the outside
    catalogues) if given, else from the files already in docs/catalogue."""
    found = citations()
    out = {}
    for kind in KINDS:
        src = os.path.join(source_dir or DOCS, kind + ".md")
        with open(src, encoding="utf-8") as f:
            sections = parse_catalogue(kind, f.read())
        out[kind + ".md"] = render(kind, sections, found[kind])
    return out


if __name__ == "__main__":
    os.makedirs(DOCS, exist_ok=True)
    for name, text in expected(sys.argv[1] if len(sys.argv) > 1 else None).items():
        with open(os.path.join(DOCS, name), "w", encoding="utf-8") as f:
            f.write(text)
        print("wrote docs/catalogue/%s" % name)
