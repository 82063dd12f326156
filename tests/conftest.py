"""What the whole suite shares: lines quoted after the run, and its parallel workers' ports.

`make test` runs the suite in two pytest-xdist workers (`-n 2 --dist loadfile`: a file stays on
one worker, so a module's cluster fixture starts once). Two things need care then:
- Ports. Each worker picks ports only from its own share of the range (TRIBUTARY_PORT_SLOT,
  tributary/procs.py), so two clusters starting at once never probe the same free block.
- The summary. A test or conftest adds lines with `add(config, section, line)` (the
  integration tests through their `summary_lines` fixture); a worker hands its lines to the
  controller when it finishes, and the controller prints them once in the terminal summary,
  where output capture does not swallow them.
"""

from __future__ import annotations

import os

import pytest

from tributary import procs

_SUMMARY = pytest.StashKey[dict]()


def add(config: pytest.Config, section: str, line: str) -> None:
    """Quotes `line` under `section` after the run (once, however many workers add it)."""
    lines = config.stash.setdefault(_SUMMARY, {}).setdefault(section, [])
    if line not in lines:
        lines.append(line)


def pytest_configure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and count:
        os.environ.setdefault(procs.PORT_SLOT_ENV, f"{int(worker[2:])}/{int(count)}")
    # The integration and docker conftests reach `add` through the plugin manager, as conftest
    # modules cannot import each other under --import-mode=importlib.
    config.pluginmanager.register(_Summary(), "tributary-summary")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Two tests with one node id are refused: pytest-xdist schedules by node id and would run
    only one of them (schemathesis's generated tests had that, tests/integration/conftest.py)."""
    seen: dict[str, int] = {}
    for item in items:
        seen[item.nodeid] = seen.get(item.nodeid, 0) + 1
    shared = sorted(nodeid for nodeid, n in seen.items() if n > 1)
    if shared:
        raise pytest.UsageError(f"{len(shared)} node id(s) name more than one test, e.g. "
                                f"{shared[0]}")


class _Summary:
    add = staticmethod(add)

    @staticmethod
    def pytest_sessionfinish(session):
        output = getattr(session.config, "workeroutput", None)
        if output is not None:  # an xdist worker: the controller prints
            output["tributary_summary"] = session.config.stash.get(_SUMMARY, {})

    @staticmethod
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(node, error):
        config = node.config
        for section, lines in getattr(node, "workeroutput", {}).get("tributary_summary",
                                                                     {}).items():
            for line in lines:
                add(config, section, line)

    @staticmethod
    def pytest_terminal_summary(terminalreporter, exitstatus, config):
        for section, lines in config.stash.get(_SUMMARY, {}).items():
            terminalreporter.write_sep("-", section)
            for line in lines:
                terminalreporter.write_line(line, yellow=section != "summary",
                                            bold=section != "summary")
