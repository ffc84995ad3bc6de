# registryd — `make run` serves TLS on https://127.0.0.1:8443; `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint pytest clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

certs/server.pem: | $(STAMP)
	$(PY) -m registryd certs dev --out certs

registry.toml: | $(STAMP)
	$(PY) -m registryd init --dev --out registry.toml

run: $(STAMP) certs/server.pem registry.toml
	$(PY) -m registryd serve --config registry.toml

lint: $(STAMP)
	$(VENV)/bin/ruff check registryd tests bench
	$(VENV)/bin/ruff format --check registryd tests bench
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest

test: lint pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache registryd.egg-info
