import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from cluster import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One shared 3-meta, 2-node, 1-router cluster for tests that do not break it."""
    c = Cluster(tmp_path_factory.mktemp("shared-cluster")).start()
    yield c
    c.stop()
