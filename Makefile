# Two commands on a fresh machine: `make up` and `make test`. Both build .venv from the pinned
# requirements.lock first; a second run installs nothing (the stamp depends on the lock file).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv node-example up test test-unit test-integration test-2pc-full test-reshard-crash sim-2pc chaos fuzz proto bench clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The Node.js example's packages (exact versions from its package-lock.json), so that `make test`
# runs that example too. Where node or npm is missing this installs nothing and says so; the
# example's test is then skipped with a warning in the pytest summary.
NODE_EXAMPLE := docs/examples/node
NODE_STAMP := $(NODE_EXAMPLE)/node_modules/.installed

node-example: $(NODE_STAMP)

$(NODE_STAMP): $(NODE_EXAMPLE)/package-lock.json $(NODE_EXAMPLE)/package.json
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		echo "npm ci in $(NODE_EXAMPLE)"; \
		cd $(NODE_EXAMPLE) && npm ci --no-audit --no-fund --loglevel=error && \
		touch node_modules/.installed; \
	else \
		echo "WARNING: node or npm is not installed: the Node.js example will not be tested"; \
	fi

up: $(STAMP)
	$(VENV)/bin/tributary up

# Two pytest-xdist workers, a test file to a worker (its module fixtures start once), each
# picking ports from its own share of the range (tests/conftest.py). TEST_WORKERS=0 runs the
# suite in one process.
TEST_WORKERS ?= 2

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -q -x -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -q tests/integration

# The issue's full crash matrix: 50 transactions per 2PC crash point (make test runs 3).
test-2pc-full: $(STAMP)
	TRIBUTARY_2PC_TXNS=50 $(PY) -m pytest -q tests/integration/test_two_phase_commit.py

# A primary killed mid-split, ten times in a row (`make test` runs it once): the kill lands at a
# different point of the split each time.
test-reshard-crash: $(STAMP)
	for i in 1 2 3 4 5 6 7 8 9 10; do $(PY) -m pytest -q \
		tests/integration/test_reshard.py -k killed || exit 1; done

# The full seeded 2PC simulation (router/txn_sim.py): 200 seeds x 20,000 steps (make test runs
# 3 seeds x 4,000). A failing seed prints the command that replays it.
sim-2pc: $(STAMP)
	$(PY) -m router.txn_sim --seeds 200 --steps 20000

# The full chaos matrix (~45 min on 2 cores): each nemesis alone, meta faults, everything at once
# with several seeds, and the CLI's failure path. `make test` runs one short seeded chaos run.
# One run by hand: .venv/bin/tributary chaos run --seed 7 --duration 60
chaos: $(STAMP)
	TRIBUTARY_CHAOS_FULL=1 $(PY) -m pytest -q -s tests/integration/test_chaos_harness.py

# The long schemathesis run against the REST API's OpenAPI document (~5 min on 2 cores): 200
# fuzzing cases per operation plus the coverage phase. `make test` runs 30 per operation.
fuzz: $(STAMP)
	TRIBUTARY_FUZZ_EXAMPLES=200 TRIBUTARY_FUZZ_COVERAGE=1 $(PY) -m pytest -q \
		tests/integration/test_fuzz_openapi.py

# Regenerates the committed protobuf/gRPC modules. tests/unit/test_proto_fresh.py fails when
# they are stale.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. \
		proto/deeplake_service.proto proto/node.proto proto/meta.proto proto/admin.proto

# `make bench` runs the default sizes (5-10 min on 2 cores); pass flags through BENCH_ARGS, e.g.
# make bench BENCH_ARGS="--quick --e2e"
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# The peer systems bench.peers compares against (Chroma, LanceDB) and matplotlib for its plot, in
# a venv of their own: never in requirements.lock, never installed by `make test`. bench.peers
# runs each peer in a subprocess of this venv's Python and skips a peer that is not installed.
.PHONY: bench-peers-deps bench-peers
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

bench-peers-deps: $(PEERS_STAMP)

$(PEERS_STAMP): Makefile
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade "pip>=23"
	$(PEERS_VENV)/bin/python -m pip install --quiet "chromadb==1.5.9" "lancedb==0.40.0" \
		"matplotlib==3.11.2" "numpy>=1.26,<3"
	touch $(PEERS_STAMP)

# Tributary (gRPC and REST, a local cluster), the Chroma server and embedded, LanceDB and raw
# hnswlib on the same data in one run: python -m bench.peers --help
bench-peers: $(STAMP) $(PEERS_STAMP)
	$(PY) -m bench.peers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) tributary-data .pytest_cache
