"""Deterministic crash points for tests. Inert unless TRIBUTARY_FAULT_DIR is set.

A test arms a point by creating the file <TRIBUTARY_FAULT_DIR>/<point>. The first process that
reaches an armed point consumes the arming (an atomic rename, so exactly one process fires) and
kills itself with SIGKILL, as a power cut would. Production processes never set the variable, so
`crash_point` is one environment lookup.
"""

from __future__ import annotations

import os
import signal

ROUTER_AFTER_PREPARE = "router_after_prepare"
ROUTER_AFTER_DECISION = "router_after_decision"
ROUTER_MID_COMMIT = "router_mid_commit"
PARTICIPANT_AFTER_VOTE = "participant_after_vote"
META_LEADER_ON_DECIDE = "meta_leader_on_decide"
# A primary dies after logging a write and before applying it (node/server.py Write).
PRIMARY_AFTER_LOG = "primary_after_log"
# A copy dies after logging its primary's 2PC decision and before applying it
# (node/replication.py _apply_one).
COPY_AFTER_LOGGING_DECISION = "copy_after_logging_decision"

# Shard moves: the source (primary) dies as it is about to hand the primary role over
# (node/replication.py hand_over); the target dies after applying ops mid catch-up
# (node/replication.py catch_up); the meta leader, which steps moves along, dies before it
# proposes FinishMove (consensus/failover.py).
MOVE_SOURCE_BEFORE_HAND_OVER = "move_source_before_hand_over"
MOVE_TARGET_MID_CATCH_UP = "move_target_mid_catch_up"
META_LEADER_BEFORE_FINISH_MOVE = "meta_leader_before_finish_move"

# Shard splits: the meta leader, which drives them, dies before it proposes FinishReshard (the
# switch; consensus/failover.py).
META_LEADER_BEFORE_FINISH_RESHARD = "meta_leader_before_finish_reshard"
# A parent's primary dies after logging a write and before its child mirrors it
# (node/replication.py log_ops): the child must still get the op, at reopen or, when the switch
# came while the node was down, from the parent's log before it writes one of its own.
SPLIT_PARENT_AFTER_LOG = "split_parent_after_log"

POINTS = (ROUTER_AFTER_PREPARE, ROUTER_AFTER_DECISION, ROUTER_MID_COMMIT,
          PARTICIPANT_AFTER_VOTE, META_LEADER_ON_DECIDE, PRIMARY_AFTER_LOG,
          MOVE_SOURCE_BEFORE_HAND_OVER, MOVE_TARGET_MID_CATCH_UP,
          META_LEADER_BEFORE_FINISH_MOVE, COPY_AFTER_LOGGING_DECISION,
          META_LEADER_BEFORE_FINISH_RESHARD, SPLIT_PARENT_AFTER_LOG)


def enabled() -> bool:
    """Whether crash points can fire in this process (a test set TRIBUTARY_FAULT_DIR)."""
    return bool(os.environ.get("TRIBUTARY_FAULT_DIR"))


def crash_point(name: str) -> None:
    directory = os.environ.get("TRIBUTARY_FAULT_DIR")
    if not directory:
        return
    armed = os.path.join(directory, name)
    try:
        os.rename(armed, os.path.join(directory, f"{name}.fired.{os.getpid()}"))
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def arm(directory: str, name: str) -> None:
    """Arms one crash at `name` (test helper)."""
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name}")
    with open(os.path.join(directory, name), "w"):
        pass


def fired(directory: str, name: str) -> int:
    return sum(1 for f in os.listdir(directory) if f.startswith(f"{name}.fired."))
