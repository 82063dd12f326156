# Two commands on a fresh machine: `make up` and `make test`. Both build .venv from the pinned
# requirements.lock first; a second run installs nothing (the stamp depends on the lock file).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv up test test-unit test-integration proto proto-check bench clean lint

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/tributary up

test: $(STAMP)
	$(PY) -m pytest -q -x --durations=15 tests

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

# Regenerates the committed protobuf/gRPC modules. tests/unit/test_proto_fresh.py fails when
# they are stale.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. \
		proto/deeplake_service.proto proto/node.proto proto/meta.proto

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) tributary-data .pytest_cache
