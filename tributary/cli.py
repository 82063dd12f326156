"""The `tributary` console script: meta, node, router, up and admin sub-commands.

Each sub-command's module is imported only when that sub-command runs, so a process carries
only what it uses: a meta member or a router never imports the shard engine (Deep Lake,
hnswlib), which `node.server` pulls in. (Before, every process imported every server module to
build the parser: each meta member and router paid the node's imports in memory and start-up.)
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib

# sub-command -> (module with add_arguments(parser) and run(args), help line)
_SERVERS = {
    "meta": ("consensus.member", "run one member of the metadata Raft group"),
    "node": ("node.server", "run a shard node"),
    "router": ("router.server", "run a router (REST + gRPC)"),
    "up": ("tributary.up", "run a whole local cluster in the foreground"),
    "chaos": ("chaos.cli", "fault injection (Toxiproxy-compatible proxy)"),
}


def _chosen_command(argv: list[str] | None) -> str | None:
    """The sub-command named on the command line (None when there is none yet, e.g. --help)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level")
    pre.add_argument("--log-format")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tributary", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", default=None, choices=("text", "json"),
                        help="log lines as text or JSON (env TRIBUTARY_LOG_FORMAT; default text)")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = _chosen_command(argv)

    for command, (module_name, help_line) in _SERVERS.items():
        p = sub.add_parser(command, help=help_line)
        if command == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.run)
    p = sub.add_parser("admin", help="operator commands")
    if chosen == "admin":
        admin_sub = p.add_subparsers(dest="admin_command", required=True)
        from tributary import cluster_cli
        cluster_cli.add_parsers(admin_sub)  # admin status, nodes list, datasets show
        from tributary import admin_cli
        admin_cli.add_parsers(admin_sub)  # admin keys ..., admin tenants ... (over REST)

    args = parser.parse_args(argv)
    from tributary import logs, tracing
    logs.setup(args.log_level, args.log_format)  # tributary/logs.py: text or JSON lines
    if args.command in ("meta", "node", "router"):
        # A crash in native code (Deep Lake, hnswlib, gRPC) then leaves every thread's Python
        # stack on stderr, which `up` and the pods' logs keep, instead of only an exit status.
        faulthandler.enable(all_threads=True)
        tracing.setup(args.command, getattr(args, "data_dir", None))
    args.func(args)


if __name__ == "__main__":
    main()
