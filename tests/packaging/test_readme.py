"""The README's walkthrough is executed as written (issue 11), so it cannot drift from the code.

The ```sh block under "## Walkthrough" runs in bash with the venv's bin first on PATH (what
`. .venv/bin/activate` does) and a temporary folder as TMPDIR (its `mktemp -d`). The CLI's
wording may change; what is checked are the exit codes and the facts the walkthrough promises:
a motor granted to the Fay, held, released, and an intact audit chain.
"""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def walkthrough():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n## Walkthrough", 1)
    assert len(section) == 2, "README.md has no '## Walkthrough' section"
    block = re.search(r"```sh\n(.*?)```", section[1], re.S)
    assert block, "the walkthrough has no ```sh block"
    return block.group(1)


def test_the_walkthrough_block_is_found_and_covers_init_to_request():
    script = walkthrough()
    for command in ("capwarden init", "capwarden keys generate", "capwarden issue descriptor",
                    "capwarden descriptors import", "capwarden serve", "capwarden request", "capwarden audit"):
        assert command in script, command


@pytest.mark.timeout(300)
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPWARDEN_", "VIRTUAL_ENV"))}
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), TMPDIR=str(tmp_path), VIRTUAL_ENV=os.path.dirname(BIN))
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + walkthrough())
    proc = subprocess.Popen(["bash", str(script)], cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)      # serve and its board, if the script died midway
            proc.communicate()
    assert proc.returncode == 0, "walkthrough failed (exit %d)\n%s\n%s" % (proc.returncode, out[-3000:], err[-3000:])
    assert "Traceback" not in out + err

    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders                 # the walkthrough's own folder, nothing else left
    store = folders[0] / "store"
    audit = subprocess.run([os.path.join(BIN, "capwarden"), "audit", "--store", str(store), "--json"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert audit.returncode == 0, audit.stderr
    objects = [json.loads(line) for line in audit.stdout.splitlines() if line.strip()]
    entries, summary = objects[:-1], objects[-1]
    assert summary["intact"] is True and summary["entries"] == len(entries)
    motor = [e for e in entries if e.get("resource", "").endswith("/sim/motor_left")]
    assert any(e["action"] == "lock" and e["outcome"] == "granted" for e in motor), motor
    assert any(e["action"] == "terminate" and e.get("reason") == "released" for e in motor), motor
