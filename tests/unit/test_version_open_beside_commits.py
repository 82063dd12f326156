"""Opening a tagged version of one store beside commits of another never freezes the process.

Deep Lake 4.7 can hang every thread of the process, GIL held, when one thread opens a tagged
version of a store while another commits to any store of the process (a node froze for good in
the versions tests: its committer in a commit of one shard, a version read opening a tag of
another; its heartbeats stopped and the meta group promoted its peer). Here a real child process
runs one replica's group commits in a thread beside time-travel opens (shard/versions.py
ViewCache) of a second replica's tag, the way a node does; it must finish both loops in time."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = r"""
import sys, threading
import numpy as np
sys.path.insert(0, sys.argv[2])
from shard.records import ExistingPolicy, VectorRecord
from shard.replica import ShardReplica
from shard.versions import ViewCache
base = sys.argv[1]
writer = ShardReplica(base + "/x", 8, "l2", index_type="flat")
tagged = ShardReplica(base + "/y", 8, "l2", index_type="flat")
rng = np.random.default_rng(1)
tagged.write([VectorRecord(id="a", values=rng.random(8, np.float32))], [],
             ExistingPolicy.ERROR, None, (1, 1))
tagged.mark_version("t")
stop = threading.Event()
commits = 0

def commit_loop():
    global commits
    seq = 1
    while not stop.is_set():
        seq += 1
        rows = [VectorRecord(id=f"r{seq}-{i}", values=v)
                for i, v in enumerate(rng.random((10, 8), np.float32))]
        writer.write(rows, [], ExistingPolicy.ERROR, None, (seq, 1))
        writer.flush()
        commits += 1

thread = threading.Thread(target=commit_loop, daemon=True)
thread.start()
for n in range(int(sys.argv[3])):
    # A fresh cache each time: every round opens the tag again, as a node does for each store
    # the first time a version of it is read.
    view = ViewCache().get(tagged.store_url, "t", 8, "l2", tagged.store_guard())
    assert view.count() == 1
stop.set()
thread.join()
print("done", commits, flush=True)
"""

_OPENS = 150


def test_tag_opens_beside_another_stores_commits_finish(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), REPO, str(_OPENS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise AssertionError(f"{_OPENS} version opens beside another store's commits did not "
                             "finish in 60 s: the process froze") from None
    assert child.returncode == 0, err[-2000:]
    done, commits = out.split()
    assert done == "done" and int(commits) > 0, out
