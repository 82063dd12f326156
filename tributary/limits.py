"""Every limit in one place, with the unit last. Checked at import time for consistency.

A few timing limits can be overridden through the environment (TRIBUTARY_<NAME upper-cased>) so
tests can shorten them; everything else is fixed here.
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(f"TRIBUTARY_{name.upper()}")
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"TRIBUTARY_{name.upper()} must be an integer, got {raw!r}") from None

batch_vectors_max = 10_000
request_bytes_max = 64 * 1024 * 1024
grpc_message_bytes_max = 64 * 1024 * 1024
top_k_max = 1_000
dimensions_max = 4_096
name_bytes_max = 255
vector_id_bytes_max = 512
content_bytes_max = 1024 * 1024
metadata_bytes_max = 64 * 1024
metadata_keys_max = 128
shard_count_max = 256
ef_search_max = 4_096
ef_search_default = 128
hnsw_m = 16
hnsw_ef_construction = 200
hnsw_initial_capacity_vectors = 1_024
list_page_size_max = 1_000
text_query_bytes_max = 1_024
rrf_k_default = 60
# A filter matching at most this many rows of a shard is answered by an exact scan of them.
filter_exact_rows_max = 20_000
hnsw_save_interval_ms = 60_000
# Vectors the background indexer adds per hold of the index write lock (bounds query stalls: a
# search waits for at most one chunk). The indexer runs at low priority, so on a busy box a chunk
# takes several times its idle time (~75 ms for 250 x 128-d); 1000 stalled searches for ~1 s.
index_chunk_vectors = 250
hnsw_save_every_vectors = 100_000
datasets_per_tenant_max = 10_000
# Datasets one multi-dataset search may name (each fans out to all of its shards).
multi_search_datasets_max = 64
# Hostile input (router/input_guard.py): our JSON bodies nest 4 deep; anything past this is a 400
# before the body is parsed. Descriptions are bounded like content.
json_depth_max = 32
description_bytes_max = 64 * 1024

# Authentication, tenants and quotas (router/auth.py, router/quotas.py).
router_heartbeat_interval_ms = 1_000
router_liveness_timeout_ms = 3_000
# Tenant usage (vectors, bytes) for max_vectors / max_storage_bytes is re-read this often.
tenant_usage_cache_ms = 1_000
# An unknown but well-formed API key triggers at most one linearizable catalog read this often.
auth_refresh_min_interval_ms = 1_000
jwt_leeway_ms = 5_000
api_key_description_bytes_max = 1_024
api_key_datasets_max = 1_024

node_heartbeat_interval_ms = 500
node_liveness_timeout_ms = 5_000
meta_rpc_timeout_ms = 5_000
node_rpc_timeout_ms = 30_000
shutdown_grace_ms = 8_000
# Internal gRPC channels reconnect quickly: a restarted peer is back within a second or two, and
# gRPC's default backoff (up to 120 s) would keep failing calls to it long after.
grpc_reconnect_backoff_min_ms = 100
grpc_reconnect_backoff_max_ms = 1_000

# Two-phase commit.
txn_prepared_timeout_ms = _env_int("txn_prepared_timeout_ms", 5_000)
txn_lock_wait_ms = _env_int("txn_lock_wait_ms", 2_000)
txn_resolve_interval_ms = 200
txn_ack_batch_interval_ms = 200
txn_participants_max = shard_count_max
idempotency_key_bytes_max = 255
idempotency_ttl_ms = 24 * 3600 * 1000
# How long the meta group remembers that a dataset delete committed, for a retry of the same
# request (its first answer lost in a leader change) to be answered as the first attempt was.
# Not read from the environment: the state machine uses it, and every member must apply alike.
dataset_delete_record_ttl_ms = 600_000
# The same for an operator's named request (commands.Requested: tenants, keys, moves, splits):
# how long its answer is kept, and how many are kept at most (the oldest go first). Constants,
# for the same reason. A MetaClient repeats a proposal within seconds.
request_record_ttl_ms = 600_000
request_records_max = 10_000
request_id_bytes_max = 128
txn_tombstone_ttl_ms = 3600 * 1000

# ---- Tuning numbers that used to live in the servers (issue 17, item 12) -----------------------
# Metadata Raft group (consensus/member.py; pysyncobj takes seconds). A follower that hears no
# leader for a random time between the election min and max starts an election. A leader cut off
# from its quorum steps down after meta_leader_fallback_ms (pysyncobj's default is 30 s, during
# which an isolated leader still answered is_leader=True). pysyncobj needs the connect timeout
# to be at least the election max.
meta_election_timeout_min_ms = 400
meta_election_timeout_max_ms = 1_200
meta_leader_fallback_ms = 3_000
meta_connect_timeout_ms = 3_500
# The Raft log is compacted into a snapshot once it holds this many entries and the last
# compaction is this old.
meta_log_compaction_entries_min = 10_000
meta_log_compaction_interval_min_ms = 600_000
# In Kubernetes a rescheduled member keeps its DNS name but not its IP; pysyncobj's default
# 10-minute DNS cache would keep peers dialing the old address.
meta_dns_cache_ms = 5_000
meta_dns_fail_cache_ms = 2_000
# Threads of a meta member's gRPC server (each blocks on a Raft commit for up to
# meta_rpc_timeout_ms).
meta_grpc_threads_max = 16
# How long a stopping server lets in-flight RPCs finish; all within shutdown_grace_ms, which
# the supervisor gives a child before SIGKILL. A node then closes its shards, whose indexers
# drain for shard_close_drain_ms before the index is saved.
meta_stop_grace_ms = 1_000
# A meta member's wait for a proposal to commit looks this often whether the member is stopping
# (member.py _committed); a commit itself wakes the wait at once.
meta_stop_poll_ms = 50
router_stop_grace_ms = 1_000
node_stop_grace_ms = 2_000
shard_close_drain_ms = 1_000
# A starting node or router asks the meta group again this often until it answers.
meta_wait_retry_ms = 500
# MetaClient: the pause after a round over every member failed, and the deadline of the
# Status call that asks one member whether it leads.
meta_client_round_pause_ms = 100
meta_status_timeout_ms = 500
# MetaClient.leader_status: how long it looks for a member that leads.
meta_leader_status_timeout_ms = 2_000
# The router refreshes its placement map and retries a shard call refused for a stale epoch at
# most this many times. A rebalance moving several copies of one dataset at once bumps its epoch
# every few steps: 3 was seen exhausted once under such churn (a write answered 503).
router_stale_epoch_retries_max = 5
# A request planned on a dataset's shard count (which ids go to which shard) is planned again
# at most this many times when the count changes under it (a split's switch).
router_replan_retries_max = 3
# How often the router recomputes the status its gRPC health service reports.
router_health_interval_ms = 1_000
# A node checks this often whether a shard's index is due a save (hnsw_save_interval_ms,
# hnsw_save_every_vectors).
hnsw_save_check_interval_ms = 5_000
# ShardReplica.search_now (a search the event loop runs itself) scans at most this many rows not
# yet in the graph (about 0.3 ms at 128-d); beyond that the search goes to a worker thread. A
# cost bound, not a limit on what a search may ask.
search_now_pending_rows_max = 10_000
# The background indexer: after a chunk failed to go into the graph it waits this long before
# trying again; close() waits at most this long for the indexer thread to end.
indexer_retry_pause_ms = 1_000
indexer_join_timeout_ms = 60_000
# WebSocket search streams: ping this often, and close a connection that misses the pong.
websocket_heartbeat_ms = 30_000


def as_dict() -> dict[str, int]:
    return {k: v for k, v in globals().items() if k.endswith(("_max", "_min", "_ms", "_default", "_vectors"))
            or k.startswith("hnsw_")}


def check() -> None:
    """Raises ValueError if limits contradict each other (a programmer or operator error)."""
    if not 0 < top_k_max <= ef_search_max:
        raise ValueError("top_k_max must be positive and at most ef_search_max")
    if not top_k_max <= ef_search_default * 100:
        raise ValueError("ef_search_default is too small for top_k_max")
    if request_bytes_max > grpc_message_bytes_max:
        raise ValueError("request_bytes_max must fit in one gRPC message")
    if node_heartbeat_interval_ms * 3 > node_liveness_timeout_ms:
        raise ValueError("node_liveness_timeout_ms must cover at least three heartbeats")
    if txn_lock_wait_ms >= node_rpc_timeout_ms:
        raise ValueError("txn_lock_wait_ms must be shorter than node_rpc_timeout_ms")
    if txn_prepared_timeout_ms <= txn_resolve_interval_ms:
        raise ValueError("txn_prepared_timeout_ms must exceed txn_resolve_interval_ms")
    if shutdown_grace_ms >= 10_000:
        raise ValueError("shutdown_grace_ms must leave room for the 10 s stop promise")
    if router_heartbeat_interval_ms * 2 > router_liveness_timeout_ms:
        raise ValueError("router_liveness_timeout_ms must cover at least two heartbeats")
    if not 0 < meta_election_timeout_min_ms < meta_election_timeout_max_ms:
        raise ValueError("meta_election_timeout_min_ms must be positive and below the max")
    if meta_connect_timeout_ms < meta_election_timeout_max_ms:
        raise ValueError("meta_connect_timeout_ms must be at least meta_election_timeout_max_ms")
    if meta_leader_fallback_ms <= meta_election_timeout_max_ms:
        raise ValueError("meta_leader_fallback_ms must exceed meta_election_timeout_max_ms: a "
                         "leader steps down only once the others may have elected another")
    if meta_rpc_timeout_ms <= meta_election_timeout_max_ms:
        raise ValueError("meta_rpc_timeout_ms must outlast an election")
    if max(meta_stop_grace_ms, router_stop_grace_ms,
           node_stop_grace_ms + shard_close_drain_ms) >= shutdown_grace_ms:
        raise ValueError("a server's stop grace (a node's plus shard_close_drain_ms) must be "
                         "shorter than shutdown_grace_ms")
    if hnsw_save_check_interval_ms > hnsw_save_interval_ms:
        raise ValueError("hnsw_save_check_interval_ms must not exceed hnsw_save_interval_ms")
    if not meta_status_timeout_ms <= meta_leader_status_timeout_ms <= meta_rpc_timeout_ms:
        raise ValueError("meta_leader_status_timeout_ms must lie between meta_status_timeout_ms "
                         "and meta_rpc_timeout_ms")
    if indexer_join_timeout_ms <= shard_close_drain_ms:
        raise ValueError("indexer_join_timeout_ms must exceed shard_close_drain_ms")


check()

# Internal authentication (tributary/cluster_auth.py): a message's proof is accepted when its
# clock is this close to the server's; nonces are remembered for that long, at most this many.
internal_proof_skew_ms = 30_000
internal_proof_nonces_max = 1_000_000
raft_password_chars_min = 16

# Hybrid search (router/core.py): the largest rrf_k a request may give, the k of 1 / (k + rank);
# far above the usual 60 (rrf_k_default), where every rank already scores almost alike.
rrf_k_max = 10_000

# Replication (node/replication.py, consensus/replication.py).
replication_factor_default = 2
# A copy that has not answered a replicated op within this long leaves the in-sync set.
replication_ack_timeout_ms = _env_int("replication_ack_timeout_ms", 2_000)
replication_segment_ops_max = _env_int("replication_segment_ops_max", 10_000)
# Ops each copy keeps in its log; a copy that needs older ones copies the shard's files instead
# (a snapshot), as does one more than replication_snapshot_behind_ops_max behind.
replication_log_ops_max = _env_int("replication_log_ops_max", 200_000)
replication_snapshot_behind_ops_max = _env_int("replication_snapshot_behind_ops_max", 50_000)
replication_snapshot_chunk_bytes_max = 1024 * 1024
replication_snapshot_timeout_ms = 600_000
replication_fetch_ops_max = 500
replication_fetch_bytes_max = 16 * 1024 * 1024
replication_fetch_timeout_ms = 10_000
replication_catch_up_round_ms = 5_000
replication_catch_up_interval_ms = 500
# The meta leader promotes an in-sync copy when a primary has missed heartbeats this long, and
# gives a shard a new copy when a node holding one has been away this long.
failover_after_ms = _env_int("failover_after_ms", 2_000)
copy_replace_after_ms = _env_int("copy_replace_after_ms", 60_000)
failover_check_interval_ms = 250
# A read with no answer from one copy after this long (or 4x the copy's usual latency, if more)
# asks another; a copy that made a read wait is avoided for read_suspect_ms.
read_hedge_min_ms = 150
read_suspect_ms = 5_000

# ---- content digests of shard copies -------------------------------------------------------------
# Rows ShardReplica.content_digest reads from the store at once (bounds its memory, not its time).
content_digest_chunk_rows_max = 4_096

# ---- exact search (shard/replica.py) -------------------------------------------------------------
# Rows the in-memory matrix of a flat (or exact-searched) replica has room for at first; its
# capacity doubles as rows are added, so appends copy the matrix O(log n) times.
exact_matrix_initial_vectors = 1_024
# Shard moves (consensus/rebalance.py): moves the leader runs at once for drains, and the
# default of `tributary admin rebalance --max-concurrent-moves`.
moves_concurrent_max = 2
# A write waiting on a primary checks this often whether the catalog has moved the shard to
# another primary (router/core.py _on_primary).
write_placement_check_ms = 100

# ---- observability (tributary/tracing.py, tributary/logs.py, */metrics.py) -----------------------
# Share of new traces (requests arriving without a sampled traceparent) that are recorded; a
# request whose traceparent says sampled is always traced. OTEL_TRACES_SAMPLER overrides.
trace_sample_ratio = float(os.environ.get("TRIBUTARY_TRACE_SAMPLE_RATIO", "0.01"))
# Spans are exported (and the trace file flushed) this often; the contract is within 10 s.
trace_export_interval_ms = 2_000
# A process's trace file is rotated past this size (one older file is kept).
trace_file_bytes_max = 64 * 1024 * 1024
# The router's deep health asks each node holding a shard for its status, waiting this long.
health_node_probe_timeout_ms = 1_000
# Deep health reports a node's index backlog as degraded past this many pending vectors.
health_index_backlog_vectors_max = 100_000
# Node gauges that read the disk (bytes per shard) are recomputed at most this often.
metrics_disk_scan_interval_ms = 15_000
# A meta member checks who leads this often, to count leader changes.
meta_leader_watch_interval_ms = 250

# ---- control plane: reads, leader changes, watches (issue 14) ------------------------------------
# A linearizable meta read (member.py read_index) polls for its quorum confirmation this often.
meta_read_index_poll_ms = 2

# ---- elastic scale-out: moves under crashes (consensus/failover.py, consensus/rebalance.py) ----
# The meta leader cancels a move whose target has sent no heartbeat for this long (the shard is
# left as it was, and a drain plans the copy onto a live node instead) rather than wait for ever.
move_target_away_cancel_ms = _env_int("move_target_away_cancel_ms", 30_000)
# A new copy (empty op log) of a shard whose primary holds at least this many vectors copies the
# files (a snapshot) instead of replaying every write from the op log (node/replication.py).
fresh_copy_snapshot_vectors_min = _env_int("fresh_copy_snapshot_vectors_min", 10_000)
# A primary handing its role over (a move) first waits, at most this long, for the 2PC txns
# prepared on the shard to be decided, which the hand-over would otherwise abort.
move_hand_over_txn_wait_ms = 5_000
# Linearizable catalog reads of one router or node are coalesced into rounds, one at a time and
# at most one per this gap, so a burst of dataset-name misses is a bounded rate of leader reads.
catalog_linearizable_read_gap_ms = 20
# MetaClient: one attempt at a member lasts at most this long; a member that misses it (a hung
# leader) is left alone for meta_member_suspect_ms while the others are asked in parallel.
meta_member_deadline_ms = 1_000
meta_member_suspect_ms = 5_000
# Catalog watches (consensus/watch.py): revisions of changes a meta member holds for clients that
# reconnect (one further back is told to take a snapshot again), streams one member serves at
# once (each holds a server thread), the progress event an idle stream sends this often, and
# the silence after which a client takes its watch to another member (a hung one).
watch_history_revisions_max = 10_000
meta_watch_streams_max = 64
watch_progress_interval_ms = 500
watch_idle_timeout_ms = 1_500
# A watch waits this long for its first event (a snapshot of a large catalog takes a while).
watch_snapshot_timeout_ms = 30_000
# A catalog read waits this long for the watch to reach the revision it needs, then reads the
# state from the leader instead (and moves the watch there).
catalog_watch_wait_ms = 1_000

# ---- consistent cuts and dataset versions (router/cut.py, consensus/versions.py, issue 16) -----
# Longest a cut holds back 2PC commit decisions of its dataset (FenceCommits); the fence
# expires by itself then, so a router that dies mid-cut stalls commits no longer than this.
cut_fence_max_ms = _env_int("cut_fence_max_ms", 1_000)
# A coordinator whose decision met a fence proposes it again after this pause.
cut_fence_retry_ms = 10
# While fenced, the cut polls the catalog this often for decided txns still unacknowledged.
cut_settle_poll_ms = 10
# A cut checks its fence is up this far past the router's clock, for skew between routers
# (a fence expires on the clock of the coordinator proposing a decision).
cut_clock_skew_ms = 100
# Cuts a version creation tries (each within cut_fence_max_ms) before it answers 503.
version_cut_attempts_max = 3
# Retention: versions kept per dataset (the oldest go first), and their age.
versions_per_dataset_max = _env_int("versions_per_dataset_max", 100)
version_retention_ms = _env_int("version_retention_ms", 30 * 24 * 3600 * 1000)
# A read at a version scans the shard's rows at that version exactly (no graph is built for an
# old version); a shard holding more rows than this refuses the search with a clear error.
as_of_scan_vectors_max = _env_int("as_of_scan_vectors_max", 1_000_000)
# Old versions a node keeps open with their vectors in memory (least recently used dropped
# first), by count and by the bytes of their vector matrices.
version_views_max = 16
version_view_cache_bytes_max = 512 * 1024 * 1024

if cut_fence_max_ms >= txn_prepared_timeout_ms:
    raise ValueError("cut_fence_max_ms must be shorter than txn_prepared_timeout_ms: a txn "
                     "whose decision waits on a fence must not be aborted meanwhile")

# ---- cluster backups and restores (node/backup.py, router/backups_admin.py) -----------------------
# Rows an export copies from a shard's recorded version into the backup's store at once.
backup_export_rows_max = 20_000
# Largest single file a restore stages on a node (a shard's Deep Lake chunk files are far smaller).
backup_file_bytes_max = 64 * 1024 * 1024 * 1024
# Bytes of one restore upload request (CLI -> router -> node RestoreChunk); under
# request_bytes_max and grpc_message_bytes_max.
backup_upload_piece_bytes_max = 8 * 1024 * 1024
# A backup job the CLI stops asking about is forgotten by its router after this long.
backup_job_idle_ms = 600_000
# Backup jobs one router keeps (running and finished) at once.
backup_jobs_max = 16
# A shard export (ExportShard stream) that takes longer than this is abandoned.
backup_export_timeout_ms = 1_800_000
# Attempts at a dataset's consistent cut (each bounded by cut_fence_max_ms) before a backup fails.
backup_cut_attempts_max = 5
# Times the backup CLI asks for one shard's export again after a failure (a node died midway).
backup_shard_attempts_max = 5
# Niceness of a node's export child process (node/backup.py): it yields the cores to requests.
backup_export_nice_max = 10
# A node sends an empty chunk this often while it copies a shard's rows for a backup; the
# router takes an export that sends nothing for backup_export_idle_ms for a dead node.
backup_export_keepalive_ms = 2_000
backup_export_idle_ms = 30_000

# ---- ingest and processes (issue 18) -------------------------------------------------------------
# Threads hnswlib uses for each chunk the background indexer adds (add_items num_threads): both
# cores, so the graph keeps up with acknowledged ingest.
index_build_threads_max = 2

# ---- write ids (node/replication.py) ---------------------------------------------------------
# Outcomes of the latest router write ids each shard copy keeps, so that a retry reaching a new
# primary that took the write over answers what the write did (not "not found" for a delete).
replication_write_outcomes_max = 4096

# ---- group commit (shard/replica.py, node/replication.py; issue 18) -----------------------------
# A shard replica commits its store in the background once this many rows (appended plus
# removed) wait uncommitted, or once the oldest uncommitted write is this old. The op log holds
# the writes meanwhile and a restart replays it past the store's last commit. One 500-row
# commit cost 4-9 ms and a 20k-row one 30-50 ms (Deep Lake 4.7, 128-d), so grouping makes the
# commit cost per row ~8x smaller; the bounds also bound the replay at start and the memory kept
# to apply uncommitted writes again after a failed write. (The op log never trims uncommitted
# ops, whatever replication_log_ops_max says: OpLog.retain_from.)
group_commit_rows_max = _env_int("group_commit_rows_max", 20_000)
group_commit_interval_ms = _env_int("group_commit_interval_ms", 1_000)
if group_commit_rows_max <= 0 or group_commit_interval_ms <= 0:
    raise ValueError("group_commit_rows_max and group_commit_interval_ms must be positive")

# ---- search batching across the hop (issue 18; router/shard_client.py, node SearchBatch) --------
# While a search message (or RPC) to a node is in flight, searches to it queue; the queue goes
# once its first search has waited this long (or it is full). With none in flight it goes at once
# (at the end of the event-loop turn). 4 rather than 2: at 16 search threads, 20k x 128, 2 shards,
# four alternating pairs, router 0.94 vs 1.04 and nodes 1.05 vs 1.27 ms of CPU per query, QPS 613
# vs 568 (medians); sequential searches never wait for it.
search_batch_wait_max_ms = 4
# Searches one SearchBatch carries; a queue this long goes at once.
search_batch_queries_max = 32
# hnswlib threads one batched knn_query uses on a node (both cores).
search_batch_threads_max = 2
# A batch of at most this many searches of one shard runs on the node's event loop when it needs
# no waiting (ShardReplica.search_batch, not blocking): graph searches of ~0.1-0.3 ms each, so
# the loop is held ~2-5 ms at most. Larger batches go to a worker thread, which costs a task, a
# thread hand-off and hnswlib's per-call thread start. Under 16 router-batched searches in
# flight the router's batches average 4-8 searches: with 4 here, node CPU per search was
# 410-546 us, with 16 354-356 us (the real node handler on a 50k x 128 replica driven through
# the router's SearchBatcher, alone, both settings in one run, load 21-25).
search_batch_inline_queries_max = 16
# The search-frame link (tributary/frames.py): finding the node's frame address (its Status)
# and connecting, at most this long; after a failed try or a lost link, plain searches take the
# gRPC stream and the link is tried again this much later.
search_frames_connect_ms = 2_000
search_frames_retry_ms = _env_int("search_frames_retry_ms", 1_000)
# A frame connection whose sent bytes go unacknowledged this long (a peer host gone without a
# reset) is closed by the kernel; keepalive probes find an idle one in about the same time.
search_frames_unacked_ms = 15_000

# ---- cuts that wait for a participant (issue 16; router/cut.py step 0) ---------------------------
# Before it fences, a cut waits (unfenced, nothing held back) this long at most for the batches
# committed before it to be applied on every shard of the dataset: a shard whose primary was
# killed applies them only once a copy is promoted or the node is back.
cut_settle_wait_ms = _env_int("cut_settle_wait_ms", 5_000)
# A backup's cuts (every dataset, every attempt, each with its own step 0) end within this; under
# the admin CLI's default --timeout (30 s), since the backup request answers once cut.
backup_cut_wait_ms = _env_int("backup_cut_wait_ms", 20_000)
# How often step 0 reads the 2PC bookkeeping (a ReadIndex round, no log entry), and how often it
# logs what it waits for.
cut_settle_wait_poll_ms = 100
cut_settle_note_ms = 2_000
if cut_settle_wait_ms > backup_cut_wait_ms:
    raise ValueError("cut_settle_wait_ms must be at most backup_cut_wait_ms")

# ---- shard splits (issue 12; consensus/reshard.py, node/split.py) ------------------------------
# How often a node builds the children it owes, reports them, and purges moved rows after a
# switch.
reshard_round_interval_ms = 500
# Moved ids one purge write deletes (a replicated write, like compaction's).
reshard_purge_batch_ids_max = 2_000
# How often a copy of a split shard (not its primary, which purges) looks whether the purge has
# reached it, so its searches stop filtering rows by owner (it reads every id).
reshard_copy_check_interval_ms = 10_000
# How long after a split starts its switch stops waiting for 2PC decisions of the dataset to be
# acknowledged by their participants (a steady stream of multi-shard batches always has some).
reshard_txn_wait_ms = 10_000
# How long `tributary admin datasets reshard --wait` waits by default.
reshard_wait_default_ms = 3_600_000

# ---- 2PC participant memory (issue 14; consensus/txn_model.py) ------------------------------------
# Finished txns each shard copy remembers (in memory; a restart forgets them), so a late or
# repeated Prepare gets the first answer and a re-sent prepare op is not staged again.
txn_finished_remembered_max = 1_000
# A shard store whose Deep Lake commit log has holes (commits killed mid-way) is compacted at
# open until the holes are below a compaction marker, at most this many times (shard/versions.py).
store_log_heal_compactions_max = 3

# ---- 2PC decisions left unacknowledged (consensus/txn_model.py, node/txn.py resend_unacked) ----
# How often a node looks, in the 2PC bookkeeping its catalog cache holds, for decisions the meta
# group lists as not acknowledged by a shard it is the primary of (an ack lost with a crashed
# node's memory), and how old such a decision must be before the primary is given it again (the
# usual ack reaches the group within txn_ack_batch_interval_ms of the apply).
txn_unacked_check_interval_ms = 1_000
txn_unacked_resend_after_ms = 2_000
if txn_unacked_resend_after_ms <= txn_ack_batch_interval_ms:
    raise ValueError("txn_unacked_resend_after_ms must exceed txn_ack_batch_interval_ms")

# ---- router process garbage collection (issue 18; router/server.py) -------------------------------
# Allocations between two young-generation collections in a router (CPython's default is 700).
# A search allocates a few hundred short-lived objects, so the default collects several times per
# query at full load; start-up objects are frozen out of collection (gc.freeze) as well.
router_gc_gen0_allocations_max = 50_000

# ---- process memory (issue 18; tributary/up.py) ------------------------------------------------
# glibc malloc arenas each `tributary up` child may use (MALLOC_ARENA_MAX, unless the environment
# already sets it). glibc's default is 8 per core; a node's many threads (gRPC, Deep Lake, the
# indexer, the committer) then keep freed memory in arenas of their own. With 2: nodes 5-8% less
# resident after a 200k ingest (bench/million.py, one run each), the empty cluster unchanged.
process_malloc_arenas_max = 2

# ---- node search stream writes (issue 18; node/server.py SearchStream) ----------------------------
# Answers a node sends in one search-stream response to a router that reads merged answers
# (ShardSearchStreamRequest.merged_answers): the answers finished while the previous write was
# on its way go out together, one write (sendmsg) and one read on the router for all of them.
# Each answer of a plain top-10 search is ~0.3 KB packed, so a full response stays ~10 KB.
search_stream_answers_per_write_max = 32
if search_stream_answers_per_write_max < 1:
    raise ValueError("search_stream_answers_per_write_max must be at least 1")

# ---- memory returned to the OS (issue 18; shard/heap.py, shard/replica.py) -----------------------
# A node asks glibc to return its freed heap (malloc_trim) after the indexer drains a backlog of at
# least memory_trim_backlog_vectors_min vectors, after a write or compaction that removes at least
# memory_trim_removed_rows_min rows, and after opening a replica of at least that many rows; at most
# once per memory_trim_interval_ms per process (a trim walks the whole heap).
memory_trim_backlog_vectors_min = 20_000
memory_trim_removed_rows_min = 20_000
memory_trim_interval_ms = 5_000
# Spare capacity a graph gets when it is loaded or rebuilt for n rows, in percent of n (hnswlib
# keeps a mutex and a level slot resident per element of capacity; it was 100%, double).
hnsw_spare_capacity_percent = 12

# ---- router search path (issue 18; router/core.py, router/shard_client.py) ----------------------
# Packed shard hits up to this many are merged with a Python sort (faster than numpy's lexsort,
# which builds a string array of the ids first, for a few dozen hits); more go through lexsort.
router_merge_python_sort_hits_max = 256
