import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from cluster import Cluster  # noqa: E402


_SUMMARY_LINES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def summary_lines(pytestconfig) -> list[str]:
    """Lines a test wants quoted after the run (e.g. the fuzz counts): printed in the terminal
    summary, where output capture does not swallow them."""
    return pytestconfig.stash.setdefault(_SUMMARY_LINES, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_SUMMARY_LINES, [])
    if lines:
        terminalreporter.write_sep("-", "summary")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One shared 3-meta, 2-node, 1-router cluster for tests that do not break it."""
    c = Cluster(tmp_path_factory.mktemp("shared-cluster")).start()
    yield c
    c.stop()
