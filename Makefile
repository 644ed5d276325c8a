# cachekit: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck bench servers-up servers-down wheel-smoke clean

# The distribution was renamed cachekit -> cachekit-py: drop the old one from an existing venv.
$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y cachekit 2>/dev/null || true
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y cachekit 2>/dev/null || true
	$(PY) -m pip install -q -e '.[sqlalchemy,prometheus]'
	touch $@

## make demo: in-process cache + SQLite file, no server needed
demo: $(VENV)/.installed
	$(PY) -m cachekit demo

## make test: venv, dev install, private Redis/Memcached servers + PostgreSQL, lint, pytest
test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	scripts/test-servers.sh start
	$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; scripts/test-servers.sh stop; exit $$rc

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src
	$(VENV)/bin/mypy

## make wheel-smoke: build the sdist and wheel, install each into a fresh venv, smoke-test them
wheel-smoke: $(VENV)/.installed-dev
	scripts/wheel-smoke.sh $(PY)

servers-up:
	scripts/test-servers.sh start

servers-down:
	scripts/test-servers.sh stop

## make bench: every benchmark script, same machine, one run (figures go to docs/benchmarks.md)
bench: $(VENV)/.installed-dev
	$(PY) -m pip install -q -e '.[bench]'
	scripts/test-servers.sh start
	set -e; trap 'scripts/test-servers.sh stop' EXIT; \
	$(PY) benchmarks/hot_path.py --plot docs/img/hot_path.png; \
	$(PY) benchmarks/backends.py; \
	$(PY) benchmarks/repository.py; \
	$(PY) benchmarks/metrics_overhead.py; \
	$(PY) benchmarks/stampede.py; \
	$(PY) benchmarks/outage.py; \
	$(PY) benchmarks/zipf_peers.py; \
	$(PY) -m cachekit bench --plot docs/img/bench.png; \
	$(PY) -m cachekit bench --simulated-clock --threads 1 --ttl 10 60 300 --bypass-writes 0.02 --duration 600; \
	$(PY) -m cachekit bench --db postgresql+psycopg://postgres@127.0.0.1:5432/test --cache-url redis://127.0.0.1:16379/0

clean:
	rm -rf $(VENV) .test-servers .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
