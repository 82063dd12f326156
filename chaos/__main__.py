"""`python -m chaos proxy --listen 127.0.0.1:8474 [--seed N] [--config proxies.json]`."""

from __future__ import annotations

import argparse
import logging
import sys

from chaos import cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos", description="Tributary chaos tools")
    parser.add_argument("--log-level", default="INFO")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cli.run(args)


if __name__ == "__main__":
    main()
