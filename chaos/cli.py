"""`chaos` sub-commands for `python -m chaos ...` and (wired by the main CLI) `tributary chaos`.

    tributary chaos list [--json]              the named scenarios, one per line
    tributary chaos run --scenario NAME ...    one seeded run of a scenario (chaos.run)
    tributary chaos proxy ...                  the fault-injecting TCP proxy (chaos.proxy)

`chaos list` and `chaos run --scenario NAME` are contracts other tools script against: the
plain listing is `NAME  description` per line, and `--json` prints an array of
{"name", "description"} objects, in registry order (chaos/scenarios.py).

The main CLI does:

    p = sub.add_parser("chaos", help="fault injection")
    chaos.cli.add_arguments(p)
    p.set_defaults(func=chaos.cli.run)
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chaos import proxy

    sub = parser.add_subparsers(dest="chaos_command", required=True)
    p = sub.add_parser("list", help="the named chaos scenarios and what each does")
    p.add_argument("--json", action="store_true",
                   help='print a JSON array of {"name", "description"} objects')
    p.set_defaults(chaos_func=list_scenarios)

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


def list_scenarios(args: argparse.Namespace) -> None:
    """Print every scenario of the registry: `NAME  description` lines, or JSON with --json."""
    from chaos.scenarios import SCENARIOS

    if args.json:
        json.dump([{"name": s.name, "description": s.description} for s in SCENARIOS],
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    width = max(len(s.name) for s in SCENARIOS)
    for s in SCENARIOS:
        print(f"{s.name:<{width}}  {s.description}")


def run(args: argparse.Namespace) -> None:
    args.chaos_func(args)
