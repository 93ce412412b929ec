"""`tcpstack script`: run packetdrill-syntax scripts against tcpstack or the kernel (docs/scripts.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tcpstack.script import find_scripts
from tcpstack.script.addressing import IP_VERSIONS
from tcpstack.script.corpus import Verdict, run_one, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "script",
        help="run packetdrill-syntax scripts against tcpstack (virtual time) or the Linux kernel",
        description=(
            "Run packetdrill-syntax test scripts (*.pkt). By default each script drives tcpstack's "
            "engine in virtual time (a 30 s script runs in milliseconds, the same every time). "
            "With --kernel the same script runs against the Linux kernel: real sockets in a "
            "network namespace created for the run, packets through a TUN device (needs root)."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="FILE.pkt|DIR", help="scripts, or directories searched for *.pkt")
    p.add_argument("--kernel", action="store_true", help="run against the Linux kernel instead of tcpstack")
    p.add_argument("-v", "--verbose", action="store_true", help="print every event and packet as it happens")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--retries",
        type=int,
        default=None,
        metavar="N",
        help="rerun a script that failed only on timing up to N times (default: 2 with --kernel, "
        "where real time is shared with the rest of the machine; 0 otherwise)",
    )
    p.add_argument(
        "--ip_version",
        choices=IP_VERSIONS,
        default=None,
        help="packetdrill's --ip_version for scripts that do not name their own on a --ip_version= line "
        "(default ipv4; ipv6 uses fd00:198:18::2 and ::1, ipv4-mapped-ipv6 AF_INET6 sockets over IPv4)",
    )
    p.add_argument(
        "--ignore-headers",
        action="store_true",
        help="expect every script to pass (ignore tcpstack-deviation / tcpstack-only header comments)",
    )
    p.set_defaults(func=run)


_LABEL = {"pass": "PASS", "fail": "FAIL", "xfail": "XFAIL", "xpass": "XPASS", "skip": "SKIP", "error": "ERROR"}


def _line(v: Verdict) -> str:
    r = v.result
    label = _LABEL[v.verdict]
    if v.verdict == "skip":
        return f"{label:5} {r.path} (tcpstack-only: {v.reason})"
    timing = f"{r.events} events, {r.script_time_us / 1e6:.3f} s script time, {r.wall_s * 1000:.0f} ms"
    if v.attempts > 1:
        timing += f", {v.attempts} attempts"
    text = f"{label:5} {r.path} ({timing})"
    if v.verdict == "xfail":
        text += f"\n      known deviation: {v.reason}"
    if v.verdict == "xpass":
        text += "\n      the recorded deviation no longer shows: remove its tcpstack-deviation header"
    if v.verdict in ("fail", "error", "xfail") and r.message:
        text += "\n" + "\n".join("      " + ln for ln in r.message.splitlines())
    return text


def run(args: argparse.Namespace) -> int:
    paths = list(find_scripts(args.paths))
    if not paths:
        print("no scripts found", file=sys.stderr)
        return 2
    verbose = (lambda s: print("    " + s)) if args.verbose and not args.json else None
    started = time.monotonic()
    verdicts = []
    for path in paths:
        retries = args.retries if args.retries is not None else (2 if args.kernel else 0)
        v = run_one(path, kernel=args.kernel, verbose=verbose, honour_headers=not args.ignore_headers,
                    retries=retries, ip_version=args.ip_version)
        verdicts.append(v)
        if not args.json:
            print(_line(v), flush=True)
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps({
            "target": "linux" if args.kernel else "tcpstack",
            "summary": summary(verdicts),
            "elapsed_s": round(elapsed, 3),
            "results": [
                {
                    "path": v.result.path,
                    "verdict": v.verdict,
                    "expected": v.expected,
                    "outcome": v.result.outcome.value,
                    "message": v.result.message,
                    "line": v.result.line,
                    "events": v.result.events,
                    "script_time_us": v.result.script_time_us,
                    "wall_s": round(v.result.wall_s, 4),
                    "reason": v.reason,
                    "attempts": v.attempts,
                    "notes": v.result.notes,
                }
                for v in verdicts
            ],
        }, indent=2))
    else:
        print(f"{summary(verdicts)} ({'linux' if args.kernel else 'tcpstack'}, {elapsed:.2f} s)")
    return 0 if all(v.ok for v in verdicts) else 1
