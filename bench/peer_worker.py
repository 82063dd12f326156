"""One peer system measured in a process of its own, run by bench.peers with the Python of the
peers venv (`make bench-peers-deps`: Chroma, LanceDB, matplotlib). It imports numpy, the peer's
library and bench.timing (standard library only), never Tributary's own packages.

    .venv-peers/bin/python -m bench.peer_worker --system chroma-embedded|chroma-server|lancedb
        --work DIR [--ef 128] [--threads 16] [--batch 1000] [--reps 3] [--max-seconds 5]
    .venv-peers/bin/python -m bench.peer_worker --plot RESULTS.json --out PLOT.png

DIR holds data.npy, queries.npy and truth.npy (bench.peers writes them). Prints one JSON line:
ingest rate and its curve, recall@10, 1-thread and N-thread QPS and latency (medians of
`--reps`), and the resident memory of the peer's process(es). `--plot` draws QPS against recall
and ingest rate against vectors loaded from a bench.peers result file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

from bench.timing import query_loop

K = 10


def _rss_mb(pid: int) -> float:
    total = 0
    for p in [pid] + _children(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout.split()
    kids = [int(x) for x in out]
    return kids + [g for k in kids for g in _children(k)]


def _ingest(add, data: np.ndarray, batch: int) -> dict:
    """add(start, stop) for every batch; the rate overall and per tenth of the data."""
    curve = []
    step = max(batch, (len(data) // 10) // batch * batch)
    started = mark = time.perf_counter()
    for start in range(0, len(data), batch):
        stop = min(len(data), start + batch)
        add(start, stop)
        if stop % step == 0 or stop == len(data):
            now = time.perf_counter()
            curve.append([stop, round((stop - (curve[-1][0] if curve else 0)) / (now - mark))])
            mark = now
    seconds = time.perf_counter() - started
    return {"vectors_per_s": round(len(data) / seconds), "seconds": round(seconds, 2),
            "curve": curve}


def _searches(search, queries: np.ndarray, truth: np.ndarray, threads: int, reps: int,
              max_seconds: float) -> dict:
    found = [search(q) for q in queries]
    hits = sum(len(set(f[:K]) & set(t[:K].tolist())) for f, t in zip(found, truth))
    out = {"recall": round(hits / (len(queries) * K), 4)}
    for n in (1, threads):
        runs = [query_loop(search, list(queries), threads=n, max_seconds=max_seconds)
                for _ in range(reps)]
        out[f"{n}t"] = {key: round(statistics.median(r[key] for r in runs), 2)
                        for key in ("qps", "p50_ms", "p99_ms")}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chroma_collection(client, ef: int):
    try:
        return client.create_collection("bench", configuration={"hnsw": {
            "space": "cosine", "max_neighbors": 16, "ef_construction": 200, "ef_search": ef}})
    except Exception:  # noqa: BLE001 - older clients take the settings as metadata
        return client.create_collection("bench", metadata={
            "hnsw:space": "cosine", "hnsw:M": 16, "hnsw:construction_ef": 200,
            "hnsw:search_ef": ef})


def run_chroma(args, data, queries, truth, server: bool) -> dict:
    import chromadb
    proc = None
    if server:
        port = _free_port()
        chroma = os.path.join(os.path.dirname(sys.executable), "chroma")
        proc = subprocess.Popen([chroma, "run", "--path", os.path.join(args.work, "chroma-srv"),
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                client = chromadb.HttpClient(host="127.0.0.1", port=port)
                client.heartbeat()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the Chroma server did not start")
                time.sleep(0.3)
    else:
        client = chromadb.PersistentClient(path=os.path.join(args.work, "chroma-emb"))
    try:
        collection = _chroma_collection(client, args.ef)
        batch = min(args.batch, client.get_max_batch_size())
        ingest = _ingest(lambda a, b: collection.add(
            ids=[str(i) for i in range(a, b)], embeddings=data[a:b]), data, batch)

        def search(q):
            result = collection.query(query_embeddings=[q], n_results=K, include=[])
            return [int(x) for x in result["ids"][0]]

        out = {"ingest": ingest, **_searches(search, queries, truth, args.threads, args.reps,
                                             args.max_seconds)}
        out["rss_mb"] = _rss_mb(proc.pid if proc else os.getpid())
        return out
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def run_lancedb(args, data, queries, truth) -> dict:
    """LanceDB embedded, brute force (no ANN index at these sizes: recall 1.0)."""
    import lancedb
    import pyarrow as pa
    db = lancedb.connect(os.path.join(args.work, "lancedb"))
    dim = data.shape[1]
    table = [None]

    def add(a, b):
        batch = pa.table({"id": pa.array(np.arange(a, b, dtype=np.int64)),
                          "vector": pa.FixedSizeListArray.from_arrays(
                              pa.array(data[a:b].reshape(-1)), dim)})
        if table[0] is None:
            table[0] = db.create_table("bench", data=batch)
        else:
            table[0].add(batch)

    ingest = _ingest(add, data, args.batch)

    def search(q):
        rows = (table[0].search(q).distance_type("cosine").limit(K).select(["id"])
                .to_arrow())
        return rows.column("id").to_pylist()

    out = {"ingest": ingest, "index": "none (exact scan)",
           **_searches(search, queries, truth, args.threads, args.reps, args.max_seconds)}
    out["rss_mb"] = _rss_mb(os.getpid())
    return out


def plot(results_path: str, out_path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(results_path) as f:
        results = json.load(f)
    threads = results["threads"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for number, (name, r) in enumerate(results["systems"].items()):
        if "skipped" in r:
            continue
        color = f"C{number}"   # one colour per system in both panels
        left.scatter(r["recall"], r[f"{threads}t"]["qps"], s=40, color=color)
        left.annotate(name, (r["recall"], r[f"{threads}t"]["qps"]), fontsize=8,
                      xytext=(4, 4), textcoords="offset points")
        curve = r.get("ingest", {}).get("curve") or []
        if curve:
            right.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=name,
                       color=color)
    recalls = [r["recall"] for r in results["systems"].values() if "skipped" not in r]
    if recalls:
        left.set_xlim(min(min(recalls) - 0.02, 0.95), 1.005)
    left.ticklabel_format(axis="x", useOffset=False, style="plain")
    left.set_xlabel("recall@10")
    left.set_ylabel(f"QPS, {threads} client threads")
    left.set_yscale("log")
    left.set_title(f"{results['size']:,} x {results['dim']}, ef {results['ef']}")
    right.set_xlabel("vectors loaded")
    right.set_ylabel("ingest, vectors/s (per tenth)")
    right.set_yscale("log")
    right.legend(fontsize=8)
    right.set_title("ingest rate as the collection grows")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=("chroma-embedded", "chroma-server", "lancedb"))
    parser.add_argument("--work")
    parser.add_argument("--ef", type=int, default=128)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--plot")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.out)
        return
    data = np.load(os.path.join(args.work, "data.npy"))
    queries = np.load(os.path.join(args.work, "queries.npy"))
    truth = np.load(os.path.join(args.work, "truth.npy"))
    if args.system == "lancedb":
        result = run_lancedb(args, data, queries, truth)
    else:
        result = run_chroma(args, data, queries, truth, server=args.system == "chroma-server")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
