"""`tcpstack stat`: sockets per state and the MIB counters of a running tcpstack.

    tcpstack stat --netns tcpstack-0          # states as netstat | awk counts them, then nstat's lines
    tcpstack stat -a                          # every counter, zeros too
    tcpstack stat --watch 1                   # refresh every second, with per-second rates
    tcpstack stat --json                      # {"states": {RFC 9293 name: n}, "mib": {nstat name: n}}

The state lines are what ``netstat -n | awk '/^tcp/ {++S[$NF]} END {for(a in
S) print a, S[a]}'`` prints for the kernel (netstat's state names, LISTEN
included as with ``netstat -an``); the counters carry nstat's names
(``TcpActiveOpens``, ``TcpExtListenOverflows``) so the two can be compared
side by side with ``ip netns exec NS nstat -az``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..runtime.control import ControlClient, ControlError
from ..tcp import State
from .ss_cmd import add_control_args, control_path, fail

S = State

#: netstat's names for the states, in the kernel's order (include/net/tcp_states.h).
NETSTAT_NAMES: dict[str, str] = {
    S.ESTABLISHED.value: "ESTABLISHED",
    S.SYN_SENT.value: "SYN_SENT",
    S.SYN_RECEIVED.value: "SYN_RECV",
    S.FIN_WAIT_1.value: "FIN_WAIT1",
    S.FIN_WAIT_2.value: "FIN_WAIT2",
    S.TIME_WAIT.value: "TIME_WAIT",
    S.CLOSED.value: "CLOSE",
    S.CLOSE_WAIT.value: "CLOSE_WAIT",
    S.LAST_ACK.value: "LAST_ACK",
    S.LISTEN.value: "LISTEN",
    S.CLOSING.value: "CLOSING",
}


def render(
    result: dict[str, Any],
    *,
    all_counters: bool = False,
    prev: dict[str, int] | None = None,
    interval: float | None = None,
) -> list[str]:
    """States (non-zero, or all with ``all_counters``), a blank line, ``#tcpstack``
    and the counters as nstat prints them (``%-32s%-16d``).  With ``prev`` and
    ``interval`` a third column gives the change per second, as nstat's rate."""
    states = result["states"]
    out = [
        f"{NETSTAT_NAMES[name]} {states.get(name, 0)}"
        for name in NETSTAT_NAMES
        if all_counters or states.get(name, 0)
    ]
    out.append("")
    out.append("#tcpstack")
    for name, value in result["mib"].items():
        if not (all_counters or value):
            continue
        if prev is not None and interval:
            rate = (value - prev.get(name, 0)) / interval
            out.append(f"{name:<32}{value:<16}{rate:6.1f}")
        else:
            out.append(f"{name:<32}{value}")
    return out


def register(sub: Any) -> None:
    p = sub.add_parser(
        "stat",
        help="sockets per state and MIB counters of a running tcpstack (netstat/nstat style)",
        description="Counts per TCP state (netstat's names) and the MIB counters in nstat's names "
        "(TcpActiveOpens, TcpExtListenOverflows, ...) of a running `tcpstack up`, read through its "
        "control socket. Non-zero counters only unless -a.",
    )
    add_control_args(p)
    p.add_argument(
        "-a", "--all", action="store_true", help="show every state and counter, zeros too"
    )
    p.add_argument(
        "--watch",
        type=_positive,
        metavar="SECONDS",
        help="refresh every SECONDS (in place on a terminal) until Ctrl-C, with rates per second",
    )
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    p.add_argument(
        "--json",
        action="store_true",
        help='JSON: {"states": {RFC 9293 name: count}, "mib": {nstat name: value}} '
        "(one object per line with --watch)",
    )
    p.set_defaults(func=run)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def _show(
    result: dict[str, Any],
    args: argparse.Namespace,
    prev: dict[str, int] | None,
    interval: float | None,
    clear: bool,
) -> None:
    if args.json:
        print(json.dumps({"states": result["states"], "mib": result["mib"]}), flush=True)
        return
    lines = render(result, all_counters=args.all, prev=prev, interval=interval)
    text = "\n".join(lines) + "\n"
    if clear:
        text = "\x1b[H\x1b[2J" + text  # home and clear: refresh in place
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        return fail("stat", "--count must be at least 1")
    try:
        with ControlClient(control_path(args)) as client:
            if args.watch is None:
                _show(client.call("stat"), args, None, None, False)
                return 0
            in_place = sys.stdout.isatty() and not args.json
            prev: dict[str, int] | None = None
            last = 0.0
            n = 0
            while True:
                result = client.call("stat")
                t = time.monotonic()
                if n and not in_place and not args.json:
                    print()
                _show(result, args, prev, t - last if prev is not None else None, in_place)
                prev, last = result["mib"], t
                n += 1
                if args.count is not None and n >= args.count:
                    return 0
                time.sleep(max(0.0, args.watch - (time.monotonic() - t)))
    except ControlError as exc:
        return fail("stat", str(exc))
    except KeyboardInterrupt:
        return 0
