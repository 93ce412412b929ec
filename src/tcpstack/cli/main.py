"""The `tcpstack` command: one subcommand per module in this package.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed arguments and returning an exit
status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules, in the order `tcpstack --help` lists them.
COMMANDS = [
    "tcpstack.cli.demo_cmd",
    "tcpstack.cli.doctor_cmd",
    "tcpstack.cli.script_cmd",
    "tcpstack.cli.up_cmd",
    "tcpstack.cli.trace_cmd",
    "tcpstack.cli.ss_cmd",
    "tcpstack.cli.stat_cmd",
    "tcpstack.cli.sysctl_cmd",
    "tcpstack.cli.nc_cmd",
    "tcpstack.cli.bench_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcpstack",
        description="A real TCP (RFC 9293) in user-space Python: the stack, the lab, the doctor.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command still being built
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
