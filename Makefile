# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test test-fast bench evaluate kafka-jars prometheus clean

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

prometheus:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q prometheus; \
	  else sudo apt-get update -q && sudo apt-get install -y -q prometheus; fi; }

demo: $(STAMP) kafka-jars
	$(BIN)/stream-ctr demo --out reports

test: $(STAMP) kafka-jars prometheus
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not broker and not prometheus"

bench: $(STAMP) kafka-jars
	$(BIN)/stream-ctr bench --json reports/bench.json --out reports/bench.md

# The offline reproduction on MovieLens-100K, all five families and modes, head scope (about 4 minutes).
evaluate: $(STAMP)
	$(BIN)/stream-ctr evaluate --dataset ml-100k --models lr,fm,wd,deepfm,dcn \
	  --modes cloud,ft,ft_lc,ft_reweight,ft_logit --scope head --seed 0 --out reports/eval-ml100k-head

clean:
	rm -rf $(VENV) reports .pytest_cache
