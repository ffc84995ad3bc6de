# registryd — `make run` serves TLS on https://127.0.0.1:8443; `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint pytest clean test-deps

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,leveldb,redis]"
	touch $(STAMP)

certs/server.pem: | $(STAMP)
	$(PY) -m registryd certs dev --out certs

registry.toml: | $(STAMP)
	$(PY) -m registryd init --dev --out registry.toml

# The daemon's PID goes to data/registryd.pid: reload it with kill -HUP "$$(cat data/registryd.pid)".
run: $(STAMP) certs/server.pem registry.toml
	mkdir -p data
	$(PY) -m registryd serve --config registry.toml --pid-file data/registryd.pid

lint: $(STAMP)
	$(VENV)/bin/ruff check registryd tests bench
	$(VENV)/bin/ruff format --check registryd tests bench
	$(VENV)/bin/mypy

# The tests start real redis-server processes (Debian's package): installed when missing.
test-deps:
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

pytest: $(STAMP) test-deps
	$(PY) -m pytest

test: lint pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache registryd.egg-info

# Load benchmarks (bench/, issue 5). wrk and hey come from Debian's packages, installed when
# missing. `make bench BENCH_ARGS="--scaling"` adds the 1M-identity and GC scenarios;
# `make bench BENCH_ARGS="--runs 3"` runs the endpoint matrix 3 times and reports the medians.
BENCH_ARGS ?=
BENCH_TOOLS = command -v wrk >/dev/null 2>&1 && command -v hey >/dev/null 2>&1 && \
	command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk hey redis-server; }

.PHONY: bench bench-smoke

bench: $(STAMP)
	$(BENCH_TOOLS)
	$(PY) -m bench $(BENCH_ARGS)

bench-smoke: $(STAMP)
	$(BENCH_TOOLS)
	$(PY) -m bench.smoke

# The schemathesis run of tests/test_openapi.py at 10,000 examples per operation (niced: minutes).
# `make fuzz FUZZ_ARGS="--all"` adds the run with default rate limits and proof of work.
FUZZ_ARGS ?=

.PHONY: fuzz

fuzz: $(STAMP)
	$(PY) -m bench.fuzz $(FUZZ_ARGS)
