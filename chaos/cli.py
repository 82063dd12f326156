"""`chaos` sub-commands for `python -m chaos ...` and (wired by the main CLI) `tributary chaos`.

The main CLI does:

    p = sub.add_parser("chaos", help="fault injection")
    chaos.cli.add_arguments(p)
    p.set_defaults(func=chaos.cli.run)
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chaos import proxy

    sub = parser.add_subparsers(dest="chaos_command", required=True)
    p = sub.add_parser("proxy", help="run the fault-injecting TCP proxy (Toxiproxy v2 HTTP API)",
                       description=proxy.__doc__.splitlines()[0])
    proxy.add_arguments(p)
    p.set_defaults(chaos_func=proxy.run)

    from chaos import run as chaos_run
    p = sub.add_parser("run", help="one seeded chaos run against a fully proxied local cluster",
                       description=chaos_run.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    chaos_run.add_arguments(p)
    p.set_defaults(chaos_func=chaos_run.run)


def run(args: argparse.Namespace) -> None:
    args.chaos_func(args)
