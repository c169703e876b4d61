# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The install compiles host/capwarden/credentials/cborscan.py (setup.py), so it is redone when
# that file changes too. It is editable: host/ is one plain path entry (pyproject.toml says why),
# so an edit in the checkout is live and setuptools has no import hook to warn about.
BUILT  := pyproject.toml setup.py host/capwarden/credentials/cborscan.py
STAMP  := $(VENV)/.installed-$(shell cat $(BUILT) | cksum | cut -d' ' -f1)

.PHONY: demo test bench venv clean chaos

$(STAMP): $(BUILT)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[sim,test,trust]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/capwarden demo

# Three workers (pytest-xdist), a test file to a worker: most tests wait on real processes
# (MicroPython boards, servers, a browser), so the 2-core machines finish in about half the time
# and make test stays under 10 minutes. make chaos stays in one process (its report counts
# every schedule and fuzz input).
# The tests start hundreds of `capwarden` processes: the checkout's modules are compiled once
# here, or with PYTHONDONTWRITEBYTECODE set (CI machines set it) every process compiles them again.
test: $(STAMP)
	@$(BIN)/python -m compileall -q host shared >/dev/null
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

# The whole suite under the chaos profile: fuzz tests with many more inputs, fault schedules for
# CAPWARDEN_CHAOS_SECONDS (default 300). Prints schedules, steps, violations and fuzz inputs/s,
# and writes them to chaos-results.json. A violation fails the run.
chaos: $(STAMP)
	CAPWARDEN_CHAOS=1 $(BIN)/python -m pytest -q -o timeout=1800

clean:
	rm -rf $(VENV) build dist *.egg-info host/*.egg-info .pytest_cache bench-results.json host/capwarden/credentials/*.so
