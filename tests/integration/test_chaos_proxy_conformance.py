"""The chaos proxy scenarios of tests/unit/test_chaos_proxy.py, run against a real Toxiproxy.

Skipped unless a `toxiproxy-server` binary is on PATH or named by $TOXIPROXY_SERVER. Its point
is to keep chaos/proxy.py honest: whatever the unit suite expects of our server, the real one
must do too (scenarios about behaviour only ours has skip themselves), so the chaos harness can
use either.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from chaos.launcher import ProxyServer, find_toxiproxy_server

pytestmark = pytest.mark.integration

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "unit",
                     "test_chaos_proxy.py")
_spec = importlib.util.spec_from_file_location("chaos_proxy_scenarios", _PATH)
_scenarios = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_scenarios)

# The shared fixtures, and every scenario, collected here under this module's `server`.
echo, tp, api, make_proxy = _scenarios.echo, _scenarios.tp, _scenarios.api, _scenarios.make_proxy
globals().update({name: getattr(_scenarios, name) for name in dir(_scenarios)
                  if name.startswith("test_")})


@pytest.fixture(scope="module")
def server():
    if find_toxiproxy_server() is None:
        pytest.skip("no toxiproxy-server on PATH or at $TOXIPROXY_SERVER")
    with ProxyServer(prefer_external=True, seed=_scenarios.SEED) as s:
        yield s
