# reeve-lite: `make run` starts the daemon, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: venv run test test-slow test-agent test-systemd lint format bench install-user deb lock clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# The daemon on its embedded defaults. Without `hapi` or `claude` on PATH (and no
# agent set), the echo agent stands in so that a pulse can be watched end to end.
run: $(STAMP)
	@if [ -z "$$REEVE_LITE_AGENT_COMMAND$$REEVE_LITE_AGENT" ] && ! command -v hapi >/dev/null \
	    && ! command -v claude >/dev/null; then \
	  echo "neither hapi nor claude found: pulses run the echo agent (set REEVE_LITE_AGENT to change)"; \
	  export REEVE_LITE_AGENT_COMMAND="$(abspath $(BIN))/reeve-lite echo-agent"; \
	fi; exec $(BIN)/reeve-lite serve

# pytest's "no tests collected" (5) is not a failure.
PYTEST_DONE = rc=$$?; [ $$rc -eq 5 ] && { echo "no tests collected"; rc=0; }; exit $$rc

# The fast tier: tests/unit (no daemon) and tests/daemon (a real daemon subprocess).
# Four workers even on two cores: most of the time is spent waiting on daemons.
test: $(STAMP)
	@$(BIN)/pytest -q -n 4; $(PYTEST_DONE)

# Tests that wait on real time (cron minute boundaries) or flood the daemon.
test-slow: $(STAMP)
	@$(BIN)/pytest -q -m slow; $(PYTEST_DONE)

# The real Claude Code and hapi from the npm registry (pinned; installed once under
# /var/cache/reeve-lite-test), against a local stand-in for the Anthropic API.
test-agent: $(STAMP)
	$(BIN)/pytest -q -s -p no:cacheprovider -m agent tests/agent

# A real systemd booted in systemd-nspawn; root only. The first run builds a Debian
# root cached in /var/cache/reeve-lite-test (about 80 s); later runs take seconds.
test-systemd: $(STAMP)
	$(BIN)/pytest -q -s -p no:cacheprovider -m systemd tests/systemd

lint: $(STAMP)
	$(BIN)/ruff check reeve_lite tests bench
	$(BIN)/ruff format --check reeve_lite tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format reeve_lite tests bench
	$(BIN)/ruff check --fix reeve_lite tests bench

# The Debian package (dist/reeve-lite_VERSION_ARCH.deb), from packaging/; needs
# Debian's python3 with python3-venv and dpkg-deb, and PyPI for the pinned wheels.
deb:
	packaging/build-deb

# Re-pin packaging/requirements.lock from pyproject.toml's dependencies.
lock:
	@rm -rf /tmp/reeve-lite-lock && /usr/bin/python3 -m venv /tmp/reeve-lite-lock
	/tmp/reeve-lite-lock/bin/pip install --quiet .
	@{ sed -n '/^#/p' packaging/requirements.lock; /tmp/reeve-lite-lock/bin/pip freeze --exclude reeve-lite; } > packaging/requirements.lock.new
	@mv packaging/requirements.lock.new packaging/requirements.lock && rm -rf /tmp/reeve-lite-lock build *.egg-info
	@echo "packaging/requirements.lock updated"

# The user units, pointing at this checkout's reeve-lite.
UNIT_DIR ?= $(HOME)/.config/systemd/user
install-user: $(STAMP)
	@mkdir -p $(UNIT_DIR)
	@for unit in units/user/*; do \
	  sed 's#/usr/bin/reeve-lite#$(abspath $(BIN))/reeve-lite#' $$unit > $(UNIT_DIR)/$$(basename $$unit); \
	done
	@echo "Installed the user units in $(UNIT_DIR). Now:"
	@echo "  systemctl --user daemon-reload"
	@echo "  systemctl --user enable --now reeve-lite.socket reeve-lite.service"
	@echo "  systemctl --user enable --now reeve-lite-backup.timer"
	@echo "  loginctl enable-linger $$(id -un)    # run pulses while logged out and after a reboot"

# Every benchmark figure in one table, beside its baseline (about 2 minutes);
# `make bench BENCH=--quick` is a smoke run of a few tens of seconds.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist
