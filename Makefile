# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test test-fast lint lint-types bench bench-load evaluate kafka-jars prometheus compose vegeta clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# MovieLens-100K ships inside recbole; its licence forbids redistribution, so we depend on the package.
	$(BIN)/pip install -q --no-deps recbole==1.2.1
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# Broker jars from Maven Central, cached in ~/.cache/stream-ctr (outside the clone).
kafka-jars: $(STAMP)
	@command -v java >/dev/null || { echo "Java 17+ is required for the local Kafka broker" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required once to fetch the Kafka jars" >&2; exit 1; }
	$(BIN)/python -c "from stream_ctr.broker.kafka import ensure_jars; print('kafka jars:', ensure_jars())"

# Debian's prometheus (prometheus, promtool) and prometheus-alertmanager (amtool) for tests/grafana.
prometheus:
	@{ command -v prometheus && command -v promtool && command -v amtool; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q prometheus prometheus-alertmanager; \
	  else sudo apt-get update -q && sudo apt-get install -y -q prometheus prometheus-alertmanager; fi; }

# Docker Compose v2 for tests/test_docker.py (`docker-compose config`), built once from its Go module and cached in
# ~/.cache/stream-ctr (outside the clone): no Docker apt repository, no engine. Needs Go 1.24+ once (an older go
# fetches the toolchain the module asks for); about 4 minutes on 2 cores, leaving ~1.4 GB in Go's own module and
# build caches (`go clean -cache -modcache` frees it). `go install ...@v2.x` refuses the module (its go.mod has an
# exclude directive), so the module is downloaded and built as the main module, with its own go.sum.
# To use it as `docker compose`: ln -s ~/.cache/stream-ctr/compose-<version>/docker-compose ~/.docker/cli-plugins/
COMPOSE_VERSION  := 2.40.3
COMPOSE_MODULE   := github.com/docker/compose/v2@v$(COMPOSE_VERSION)
STREAM_CTR_CACHE ?= $(HOME)/.cache/stream-ctr
COMPOSE          := $(STREAM_CTR_CACHE)/compose-$(COMPOSE_VERSION)/docker-compose
GO               ?= $(shell command -v go || echo /usr/local/go/bin/go)

compose: $(COMPOSE)

$(COMPOSE):
	@test -x "$(GO)" || { echo "Go 1.24+ is required once to build docker compose (or set GO=/path/to/go)" >&2; exit 1; }
	$(GO) mod download $(COMPOSE_MODULE)
	mkdir -p $(@D)
	cd "$$($(GO) env GOMODCACHE)/$(COMPOSE_MODULE)" && $(GO) build -trimpath -buildvcs=false -o $@.tmp \
	  -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=v$(COMPOSE_VERSION)" ./cmd
	mv $@.tmp $@
	$@ version

# vegeta, the open-loop HTTP load generator of `stream-ctr bench --serving-load`, built once from its Go module
# into ~/.cache/stream-ctr/bin (about 20 s; Go 1.22+).
VEGETA_VERSION := 12.12.0
VEGETA         := $(STREAM_CTR_CACHE)/bin/vegeta

vegeta: $(VEGETA)

$(VEGETA):
	@test -x "$(GO)" || { echo "Go is required once to build vegeta (or set GO=/path/to/go)" >&2; exit 1; }
	mkdir -p $(@D)
	GOBIN=$(@D) GOFLAGS=-mod=mod $(GO) install github.com/tsenart/vegeta/v12@v$(VEGETA_VERSION)

demo: $(STAMP) kafka-jars
	$(BIN)/stream-ctr demo --out reports

# Every test tier (CI): lint and types first, then all tests, the real Kafka broker and Prometheus included.
test: lint kafka-jars prometheus compose vegeta
	STREAM_CTR_VEGETA=$(VEGETA) $(BIN)/python -m pytest

# Under 2 minutes: no Kafka, no Prometheus, no 100,000-event runs.
test-fast: lint
	STREAM_CTR_HYPOTHESIS_QUOTA=1000 $(BIN)/python -m pytest -m "not broker and not prometheus and not slow"

# ruff (lint and format) and mypy, settings in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory lint-types

# agents/ and topics/ are installed inside stream_ctr but live in their own folders: mypy checks them as such.
lint-types: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy agents topics

bench: $(STAMP) kafka-jars
	$(BIN)/stream-ctr bench --json reports/bench.json --out reports/bench.md

# /v1/score under open-loop load, without and with the demo's events flowing, on the worker then on a scorer
# process beside it (about 9 minutes).
bench-load: $(STAMP) kafka-jars vegeta
	STREAM_CTR_VEGETA=$(VEGETA) $(BIN)/stream-ctr bench --no-inprocess --serving-load --out reports/load.md

# The offline reproduction on MovieLens-100K, all five families and modes, head scope (about 4 minutes).
evaluate: $(STAMP)
	$(BIN)/stream-ctr evaluate --dataset ml-100k --models lr,fm,wd,deepfm,dcn \
	  --modes cloud,ft,ft_lc,ft_reweight,ft_logit --scope head --seed 0 --out reports/eval-ml100k-head

clean:
	rm -rf $(VENV) reports .pytest_cache
