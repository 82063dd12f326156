"""The README's curl walk-through, run step by step against a real cluster: every step must
answer 2xx, in the order the README gives them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.integration

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def walkthrough_script() -> str:
    """The shell block under the README's "Walk-through with curl" heading."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    section = text.split("## Walk-through with curl", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_step_of_the_readme_walkthrough_succeeds_in_order(cluster):
    script = walkthrough_script()
    assert script.count("curl -s ") >= 20
    # Stop at the first step that is not a 2xx, and show its body.
    script = script.replace("curl -s ", "curl -sS --fail-with-body ")
    script = re.sub(r"^API=.*$", f"API={cluster.rest}", script, count=1, flags=re.M)
    # Names of their own, so the steps cannot meet another test's datasets.
    suffix = uuid.uuid4().hex[:6]
    for name in ("articles", "blogs"):
        script = re.sub(rf"\b{name}\b", f"{name}-{suffix}", script)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (f"a README step failed (exit {result.returncode})\n"
                                    f"stdout:\n{result.stdout[-3000:]}\n"
                                    f"stderr:\n{result.stderr[-3000:]}")
    # The multi-dataset search found a hit in the dataset the walk-through made for it.
    assert f'"dataset_id":"blogs-{suffix}"' in result.stdout.replace(" ", "")
