# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The install compiles host/capwarden/credentials/cborscan.py (setup.py), so it is redone when
# that file changes too.
BUILT  := pyproject.toml setup.py host/capwarden/credentials/cborscan.py
STAMP  := $(VENV)/.installed-$(shell cat $(BUILT) | cksum | cut -d' ' -f1)

.PHONY: demo test bench venv clean

$(STAMP): $(BUILT)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[sim,test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/capwarden demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache bench-results.json host/capwarden/credentials/*.so
