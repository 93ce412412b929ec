"""`tcpstack sysctl`: read and set the tunables of a running tcpstack, as sysctl(8) does the kernel's.

    tcpstack sysctl net.ipv4.tcp_syncookies=2      # set (prints "net.ipv4.tcp_syncookies = 2")
    tcpstack sysctl tcp_syncookies                 # read; the net.ipv4. prefix is optional
    tcpstack sysctl -a                             # every tunable
    tcpstack sysctl -n tcp_rmem                    # the value only: "4096	131072	6291456"

Keys and values are validated by the stack (tcpstack.tcp.config.Config.set);
an unknown key or a bad value is one line on stderr and exit status 1, and a
refused key (tcp_tw_recycle) says why.  Every argument is processed, as
sysctl(8) does; the status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..runtime.control import ControlClient, ControlError
from .ss_cmd import add_control_args, control_path, fail


def format_value(value: Any) -> str:
    """sysctl(8)'s value text: vectors separated by tabs."""
    if isinstance(value, list | tuple):
        return "\t".join(str(v) for v in value)
    return str(value)


def format_line(name: str, value: Any, *, values_only: bool = False) -> str:
    return format_value(value) if values_only else f"{name} = {format_value(value)}"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sysctl",
        help="read or set the tunables of a running tcpstack, like sysctl(8)",
        description="Read (`KEY`) or set (`KEY=VALUE`) the tunables of a running `tcpstack up` "
        "through its control socket. Keys are Linux's sysctl names, with or without net.ipv4. "
        "(net.core. for somaxconn); output is sysctl(8)'s `net.ipv4.tcp_syncookies = 2`.",
    )
    add_control_args(p)
    p.add_argument("-a", "--all", action="store_true", help="list every tunable")
    p.add_argument("-n", "--values", action="store_true", help="print values only, no names")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the values set")
    p.add_argument(
        "-w",
        "--write",
        action="store_true",
        help="accepted for sysctl(8) habit (KEY=VALUE sets anyway)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object: {full name: value}")
    p.add_argument(
        "assignments",
        nargs="*",
        metavar="KEY[=VALUE]",
        help="a tunable to read, or to set to VALUE",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.all and not args.assignments:
        return fail("sysctl", "give KEY, KEY=VALUE or -a (see `tcpstack sysctl --help`)", 2)
    status = 0
    shown: dict[str, Any] = {}

    def show(name: str, value: Any, quiet: bool = False) -> None:
        shown[name] = value
        if not (args.json or quiet):
            print(format_line(name, value, values_only=args.values), flush=True)

    try:
        with ControlClient(control_path(args)) as client:
            if args.all:
                for name, value in client.call("sysctl-list")["values"].items():
                    show(name, value)
            for item in args.assignments:
                key, eq, value = item.partition("=")
                key = key.strip()
                try:
                    if eq:
                        r = client.call("sysctl-set", key=key, value=value.strip())
                    else:
                        r = client.call("sysctl-get", key=key)
                except ControlError as exc:
                    status = fail("sysctl", str(exc))
                    continue
                show(r["name"], r["value"], quiet=bool(eq) and args.quiet)
    except ControlError as exc:
        return fail("sysctl", str(exc))
    if args.json:
        print(json.dumps(shown, indent=1))
    return status
