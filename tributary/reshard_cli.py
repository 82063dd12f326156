"""`tributary admin datasets reshard NAME --shards 2N [--wait] [--json] [--cancel]`: doubles a
dataset's shard count online (router/reshard_admin.py, consensus/reshard.py).

Without --wait it starts the split and prints its progress once. With --wait it shows a rich
progress bar (children built, rate, ETA) on stderr until the switch, then exits 0; a split that
ends without a switch (cancelled, the dataset deleted) or outlasts --wait-timeout exits non-zero
with one line. --json prints JSON instead: with --wait, one progress document per line while it
waits and the final document last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse

from tributary import admin_cli, limits


def _path(args) -> str:
    query = f"?tenant_id={urllib.parse.quote(args.tenant)}" if args.tenant else ""
    return f"/api/v1/admin/datasets/{urllib.parse.quote(args.name, safe='')}/reshard{query}"


def _fail(message: str) -> None:
    raise SystemExit(f"tributary admin: {message}")


def _line(doc: dict) -> str:
    if doc["state"] != "building":
        return f"{doc['dataset']}: {doc['shard_count']} shards ({doc['state']})"
    eta = "unknown" if doc.get("eta_s") is None else f"{doc['eta_s']:.0f} s"
    return (f"{doc['dataset']}: {doc['old_count']} -> {doc['new_count']} shards, children "
            f"built {doc['children_built']}/{doc['children_needed']}, "
            f"{doc['rate_children_s']:.2f}/s, ETA {eta}")


def _wait(args, target: int) -> dict:
    """Polls the split until the dataset has `target` shards; fails with one line when it
    ends without the switch or outlasts --wait-timeout."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    deadline = time.monotonic() + args.wait_timeout
    with Progress(TextColumn(f"resharding {args.name} to {target}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} children"),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=args.json) as progress:
        task = progress.add_task("reshard", total=1, rate="")
        while True:
            doc = admin_cli._request(args, "GET", _path(args))
            if args.json:
                print(json.dumps(doc, sort_keys=True), flush=True)
            if doc["state"] == "building":
                progress.update(task, total=max(1, doc["children_needed"]),
                                completed=doc["children_built"],
                                rate=f"{doc['rate_children_s']:.2f}/s")
            elif doc["shard_count"] >= target:
                progress.update(task, completed=progress.tasks[0].total)
                return doc
            else:
                _fail(f"the reshard of {args.name} ended without switching to {target} shards "
                      f"(it has {doc['shard_count']}; cancelled?)")
            if time.monotonic() > deadline:
                _fail(f"resharding {args.name}: not done after {args.wait_timeout:.0f} s "
                      f"({_line(doc)})")
            time.sleep(args.poll_interval)


def reshard(args: argparse.Namespace) -> None:
    if args.cancel:
        doc = admin_cli._request(args, "DELETE", _path(args))
    elif args.shards is None:
        doc = admin_cli._request(args, "GET", _path(args))
    else:
        doc = admin_cli._request(args, "POST", _path(args), {"shards": args.shards})
        if args.wait:
            doc = _wait(args, args.shards)
    if args.json:
        # After --wait's progress lines, the final document is one line too.
        print(json.dumps(doc, sort_keys=True) if args.wait else
              json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(_line(doc))


def add_parser(datasets_sub, command) -> None:
    """`datasets reshard`, with the flags every admin command takes (`command` is
    cluster_cli._command)."""
    q = command(datasets_sub, "reshard", "double a dataset's shard count online (shard i "
                "splits into i and i + N); without --shards, show the split's progress",
                reshard, wait="the switch to the new count is done")
    q.set_defaults(wait_timeout=limits.reshard_wait_default_ms / 1000)
    q.add_argument("name")
    q.add_argument("--shards", type=int, default=None,
                   help="the new shard count: exactly twice the current one")
    q.add_argument("--tenant", default=None, help="the dataset's tenant (default: default)")
    q.add_argument("--cancel", action="store_true",
                   help="cancel the split in progress (nothing changes for readers)")
    q.add_argument("--poll-interval", type=float, default=1.0, help="seconds (--wait)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `tributary admin datasets reshard ...`")
