# readiness-agent: every entry point sets up what it needs first (venv, redis-server, promtool).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_ARGS ?=
QUICK ?=

.PHONY: help venv tools run test test-fast lint lock docs bench demo-race soak mutation clean

help:
	@echo "make run        set up, then run the agent against a local Redis ($(REDIS_URL) or a throwaway one)"
	@echo "make test       set up, then ruff + mypy --strict + the whole test suite against real redis-server"
	@echo "make test-fast  the same without the slow tier (processes against real time): the inner loop"
	@echo "make bench      benchmarks (not part of CI), results table on stdout; make bench QUICK=1: < 2 min"
	@echo "make demo-race  the WebSocket 1011 race (modes a-d at five load-balancer delays) and a rolling deploy"
	@echo "make mutation   mutation testing of the verdict and value parsing (not part of CI)"
	@echo "make lock       regenerate requirements.lock (the image's pinned, hashed dependencies; LOCK_ARGS=--upgrade)"
	@echo "make docs       regenerate docs/settings.md from agent/config/settings.py and the check kinds"

# Two venv stamps: `run` needs only the agent; tests, lint and the bench need the test extra too.
$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

# Its own stamp: `make run` creates .venv/bin/readiness-agent too, so that file cannot say the test extra is in.
$(VENV)/.installed-test: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet -e ./client  # readiness_client, the app's side (its own distribution)
	@touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-test

tools:
	@scripts/install-tools.sh test

# Only what running needs: the agent (no test extra) and redis-server for the throwaway Redis.
run: $(VENV)/.installed-run
	@scripts/install-tools.sh run
	@scripts/run-local.sh "$(REDIS_URL)"

lint: venv
	$(BIN)/ruff check agent harness tests bench examples client
	$(BIN)/mypy --strict agent harness
	$(BIN)/mypy --strict client/readiness_client

test: venv tools lint
	$(BIN)/pytest --durations=25 $(PYTEST_ARGS)

# The inner loop: lint and the fast tier (no process against real time), about a minute.
test-fast: venv tools lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# The image's lock: runtime dependencies + the kube extra + the build backend, every file hashed, resolved for
# the platform this runs on (the image's: linux x86_64, CPython 3.11; for arm64 run it there). Existing pins are
# kept unless LOCK_ARGS=--upgrade. The indexes and find-links of the machine's pip config stay out of the file.
LOCK_ARGS ?=
lock: $(VENV)/.installed-run
	@$(BIN)/python -c 'import sys; assert sys.platform == "linux" and sys.version_info[:2] == (3, 11), "make lock: run it on Linux with CPython 3.11 (the image)"'
	$(BIN)/pip install --quiet 'pip-tools>=7.5'
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	    --extra kube --build-deps-for wheel --output-file requirements.lock $(LOCK_ARGS) pyproject.toml

# The settings reference (tests/test_docs.py fails when the checked-in page differs from what this writes).
docs: $(VENV)/.installed-run
	$(BIN)/python scripts/gen_reference.py

# The bench installs its own tools (scripts/install-tools.sh bench) and marks a part MISS when one is missing.
bench: venv
	$(BIN)/python -m bench $(if $(QUICK),--quick)

# The sweep (every mode at five load-balancer delays) and the rolling deploy; their tables and pictures are in
# docs/faults.md and docs/race/ (CI runs mode (d) at one delay: tests/test_race_1011.py).
demo-race: venv tools
	$(BIN)/python -m examples.websocket_app.race --delays 0,0.05,1,3,5 --down 5 --out docs/race/sweep.json
	$(BIN)/python -m examples.websocket_app.deploy --out docs/race/deploy.json
	$(BIN)/pip install --quiet matplotlib
	$(BIN)/python -m examples.websocket_app.plots docs/race

soak: venv tools
	$(BIN)/python -m bench.soak

mutation: venv
	$(BIN)/python scripts/mutation.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
