# Every target does its own set-up, idempotently: the venvs are (re)built only when their
# requirement files change.
PYTHON ?= python3
VENV := .venv
AGENT_VENV := .venv-agent
BIN := $(VENV)/bin
PIP_FLAGS := --disable-pip-version-check -q

.PHONY: demo test bench agent models lint venv agent-venv wheels arm-rootfs clean help system-deps

help:
	@echo "make demo    - set up, then run the demo model family on the default fleet (devices.yaml)"
	@echo "make test    - set up, then run the whole test suite"
	@echo "make bench   - measure edgebench itself; figures land in bench/results/"
	@echo "make agent   - build dist/edgebench-agent.pyz (the zipapp pushed to devices)"
	@echo "make models  - regenerate models/demo (needs TensorFlow; the result is committed)"
	@echo "make arm-rootfs - build/cache the emulated aarch64 board of the tests (root, ~2-3 min cold)"

$(VENV)/.stamp: requirements/dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -r requirements/dev.txt
	$(BIN)/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

$(AGENT_VENV)/.stamp: requirements/agent.txt
	test -x $(AGENT_VENV)/bin/python || $(PYTHON) -m venv $(AGENT_VENV)
	$(AGENT_VENV)/bin/pip install $(PIP_FLAGS) -r requirements/agent.txt
	touch $@

# Wheels a device can be bootstrapped from without internet (edgebench bootstrap --wheels).
wheels/.stamp: requirements/agent.txt
	mkdir -p wheels
	$(BIN)/pip download $(PIP_FLAGS) -d wheels -r requirements/agent.txt
	touch $@

venv: $(VENV)/.stamp
agent-venv: $(AGENT_VENV)/.stamp

dist/edgebench-agent.pyz: $(VENV)/.stamp $(shell find agent -name '*.py' 2>/dev/null)
	$(BIN)/python -m agent.build dist/edgebench-agent.pyz

agent: dist/edgebench-agent.pyz

# The emulated aarch64 test board: a Debian arm64 rootfs with python3 + numpy + tflite-runtime 2.14,
# cached under /var/cache/edgebench-test keyed by its recipe (tests/arm_rootfs.py); a no-op when cached.
arm-rootfs: system-deps $(VENV)/.stamp
	$(BIN)/python -m tests.arm_rootfs

# The report is written even when the run exits 1 (some jobs failed) or 6 (a variant drifted): it is what
# says why. The HTML file's path is the last line; make's exit status is the run's.
demo: $(VENV)/.stamp dist/edgebench-agent.pyz
	$(BIN)/edgebench run models/demo; code=$$?; \
	if [ $$code -eq 0 ] || [ $$code -eq 1 ] || [ $$code -eq 6 ]; then \
	  $(BIN)/edgebench report --last --format csv,md,html || exit $$?; \
	fi; exit $$code

# System packages the tests use (sshd, chromium, postgresql, qemu-user-static, debootstrap ...): installed
# with apt-get when root, otherwise one line says what to install.
system-deps:
	@bash scripts/system-deps.sh

test: system-deps $(VENV)/.stamp $(AGENT_VENV)/.stamp wheels/.stamp dist/edgebench-agent.pyz arm-rootfs
	$(BIN)/ruff check agent controller tests bench
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.stamp $(AGENT_VENV)/.stamp dist/edgebench-agent.pyz
	$(BIN)/python bench/run_all.py

models: $(VENV)/.stamp
	$(BIN)/python -m models.make_demo models/demo  # the demo-family maker lives outside the package

lint: $(VENV)/.stamp
	$(BIN)/ruff check agent controller tests bench

clean:
	rm -rf dist build *.egg-info .pytest_cache
