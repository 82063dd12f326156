import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from cluster import Cluster  # noqa: E402


class _SummaryLines:
    """`append(line)` quotes the line after the run (tests/conftest.py, which also carries it
    from a parallel worker to the controller)."""

    def __init__(self, config):
        self._add = config.pluginmanager.get_plugin("tributary-summary").add
        self._config = config

    def append(self, line: str) -> None:
        self._add(self._config, "summary", line)


@pytest.fixture(scope="session")
def summary_lines(pytestconfig) -> _SummaryLines:
    """Lines a test wants quoted after the run (e.g. the fuzz counts): printed in the terminal
    summary, where output capture does not swallow them."""
    return _SummaryLines(pytestconfig)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """schemathesis names each generated test `test_x[METHOD /path]` but, under pytest 9 (which
    builds a node id from `originalname` and the parametrize call), gives them all the node id
    of `test_x`. Reports could not tell the operations apart, and pytest-xdist, which schedules
    by node id, would run one of them. Each gets its operation in its id again."""
    for item in items:
        label = getattr(item, "operation_label", None)
        if label and item.nodeid == str(item.parent.id.child(item.originalname)):
            item._id = item.parent.id.child(item.originalname).with_params(label)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One shared 3-meta, 2-node, 1-router cluster for tests that do not break it."""
    c = Cluster(tmp_path_factory.mktemp("shared-cluster")).start()
    yield c
    c.stop()
