"""`tcpstack doctor`: explain this Linux host's kernel TCP state (docs/doctor.md)."""

from __future__ import annotations

import argparse
import json
import sys

from tcpstack.doctor import (
    LiveSource,
    NetnsSource,
    SnapshotSource,
    SourceError,
    examine,
    save_snapshot,
)
from tcpstack.doctor.render import render


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="explain the kernel's TCP state: sockets per state, owners, counters, advice",
        description=(
            "Read /proc/net/tcp{,6}, /proc/net/{netstat,snmp} and the TCP sysctls of this "
            "host (or a network namespace, or a saved /proc snapshot) and explain them."
        ),
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--netns",
        metavar="NAME",
        help="look inside network namespace NAME (/run/netns/NAME, or a path such as "
        "/proc/PID/ns/net); needs root",
    )
    where.add_argument(
        "--proc",
        metavar="DIR",
        help="read a saved /proc snapshot (a tree mirroring /proc; see --save-proc)",
    )
    p.add_argument(
        "--save-proc",
        metavar="DIR",
        help="also write what was read (net/*, sys/net/*, PID/fd socket links, PID/comm) to DIR",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="sample the counters twice, SECONDS apart, and judge what is rising now",
    )
    p.add_argument("--top", type=int, default=10, metavar="N", help="rows per table (default 10)")
    p.add_argument("--plain", action="store_true", help="plain text even if rich is installed")
    p.add_argument(
        "--no-owners", action="store_true", help="skip mapping sockets to processes (/proc/*/fd)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.proc and args.save_proc:
        print(
            "tcpstack doctor: --save-proc reads a live kernel; it cannot copy a --proc snapshot",
            file=sys.stderr,
        )
        return 2
    if args.proc and args.interval:
        print(
            "tcpstack doctor: --interval needs a live kernel, not a --proc snapshot",
            file=sys.stderr,
        )
        return 2
    if args.top < 1:
        print("tcpstack doctor: --top must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.proc:
            source = SnapshotSource(args.proc)
        elif args.netns:
            source = NetnsSource(args.netns)
        else:
            source = LiveSource()
        if args.save_proc:
            meta = save_snapshot(source, args.save_proc)
            print(
                f"tcpstack doctor: snapshot of {source.label} written to {args.save_proc} "
                f"({meta['files']} files, {meta['socket_links']} socket links)",
                file=sys.stderr,
            )
        report = examine(
            source, interval=args.interval, top=max(args.top, 20), owners=not args.no_owners
        )
    except (SourceError, ValueError) as exc:
        print(f"tcpstack doctor: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report, sys.stdout, top=args.top, plain=args.plain)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tcpstack.cli.doctor_cmd [options]``: the doctor alone, with
    the same parser ``tcpstack doctor`` uses, whatever state other commands are in."""
    parser = argparse.ArgumentParser(prog="tcpstack")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
