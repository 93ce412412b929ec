"""`tcpstack ss`: the sockets of a running tcpstack, as ``ss -tan`` shows the kernel's.

    tcpstack ss --netns tcpstack-0            # every socket (LISTEN, SYN-RECV, ESTAB, ..., TIME-WAIT)
    tcpstack ss -i state established          # with tcp_info: rtt, rto, cwnd, windows, timer
    tcpstack ss -o sport = :80                # with timers, only local port 80
    tcpstack ss --json                        # RFC 9293 state names, every field

The stack answers through its control socket (tcpstack.runtime.control), in
one pass over its tables: the listing is a snapshot of one instant.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Iterable
from typing import Any

from ..runtime.control import STATE_GROUPS, ControlError, find_path, parse_states, request
from ..runtime.tun import DEFAULT_NETNS
from ..tcp import State

S = State

#: The names ss(8) prints (iproute2's sstate_name) for the RFC 9293 states.
SS_NAMES: dict[str, str] = {
    S.ESTABLISHED.value: "ESTAB",
    S.SYN_SENT.value: "SYN-SENT",
    S.SYN_RECEIVED.value: "SYN-RECV",
    S.FIN_WAIT_1.value: "FIN-WAIT-1",
    S.FIN_WAIT_2.value: "FIN-WAIT-2",
    S.TIME_WAIT.value: "TIME-WAIT",
    S.CLOSED.value: "UNCONN",
    S.CLOSE_WAIT.value: "CLOSE-WAIT",
    S.LAST_ACK.value: "LAST-ACK",
    S.LISTEN.value: "LISTEN",
    S.CLOSING.value: "CLOSING",
}


# ---------------------------------------------------------------------- shared by ss, stat, sysctl
def add_control_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--control",
        metavar="PATH",
        help="the control socket of a running `tcpstack up` (printed at its start-up)",
    )
    where.add_argument(
        "--netns",
        metavar="NAME",
        help=f"find the control socket of `tcpstack up --netns NAME` (default {DEFAULT_NETNS})",
    )


def control_path(args: argparse.Namespace) -> str:
    return args.control or find_path(args.netns or DEFAULT_NETNS)


def fail(cmd: str, msg: str, code: int = 1) -> int:
    print(f"tcpstack {cmd}: {msg}", file=sys.stderr, flush=True)
    return code


# ---------------------------------------------------------------------- filters (ss's syntax, a subset)
_OP_WORDS = {
    "=": "==",
    "==": "==",
    "eq": "==",
    "!=": "!=",
    "ne": "!=",
    "neq": "!=",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "le": "<=",
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "ge": ">=",
}


def _port(text: str) -> int:
    t = text.strip()
    if t.startswith(":"):
        t = t[1:]
    if t.isdigit():
        port = int(t)
        if port > 65535:
            raise ValueError(f"port out of range: {text!r}")
        return port
    try:
        return socket.getservbyname(t, "tcp")
    except OSError:
        raise ValueError(f"not a port: {text!r}") from None


def parse_filter(tokens: list[str]) -> tuple[list[str] | None, list[list[Any]]]:
    """ss's filter words -> (state words for the server or None, port conditions).

    Supported: ``state NAME`` (repeatable; ss's names and groups), ``exclude
    NAME``, ``sport OP :PORT``, ``dport OP :PORT`` (OP: = == eq != ne < lt <=
    le > gt >= ge; OP may be left out for =), ``and``.  Conditions are ANDed."""
    include: set[State] = set()
    exclude: set[State] = set()
    any_state = False
    ports: list[list[Any]] = []
    i = 0
    n = len(tokens)
    while i < n:
        t = tokens[i].lower()
        if t in ("and", "&&", "&"):
            i += 1
        elif t in ("state", "exclude", "excl"):
            if i + 1 >= n:
                raise ValueError(f"`{t}` needs a state name")
            states = parse_states([tokens[i + 1]])
            (include if t == "state" else exclude).update(states)
            any_state = any_state or t == "state"
            i += 2
        elif t in ("sport", "dport", "src", "dst"):
            if t in ("src", "dst"):
                raise ValueError(f"`{t}` (address) filters are not supported; use sport/dport")
            if i + 1 >= n:
                raise ValueError(f"`{t}` needs a port, e.g. `{t} = :80`")
            op = _OP_WORDS.get(tokens[i + 1].lower())
            j = i + 1
            if op is None:
                op = "=="
            else:
                j += 1
            if j >= n:
                raise ValueError(f"`{t}` needs a port, e.g. `{t} = :80`")
            ports.append([t, op, _port(tokens[j])])
            i = j + 1
        elif t in ("or", "||", "|", "not", "!", "(", ")"):
            raise ValueError(f"`{tokens[i]}` is not supported: conditions are ANDed")
        else:
            raise ValueError(
                f"unknown filter word {tokens[i]!r}; use state/exclude NAME, sport/dport OP :PORT"
            )
    if not any_state and not exclude:
        return None, ports
    chosen = (include if any_state else set(State)) - exclude
    return sorted(s.value for s in chosen), ports


# ---------------------------------------------------------------------- rendering
def format_ms_timer(ms: int) -> str:
    """ss's print_ms_timer(): 200 -> "200ms", 1500 -> "1.500ms", 59000 -> "59sec",
    7_140_000 -> "119min" (below ten minutes the seconds stay: "1min30sec")."""
    secs, msecs = divmod(max(0, int(ms)), 1000)
    minutes, secs = divmod(secs, 60)
    out = ""
    if minutes:
        msecs = 0
        out = f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        out += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        out += f"{msecs:03d}ms"
    return out


def timer_text(timer: dict[str, Any] | None) -> str:
    """``timer:(on,200ms,0)`` as ss -o prints it ("" when no timer runs)."""
    if not timer:
        return ""
    return (
        f"timer:({timer['name']},{format_ms_timer(timer['expires_us'] // 1000)},{timer['retrans']})"
    )


def _ms(us: int) -> str:
    return f"{us / 1000:g}"


def info_text(info: dict[str, Any]) -> str:
    """The ss -i line of one connection (the fields tcpstack has, in ss's order)."""
    parts: list[str] = [o for o in ("ts", "sack", "ecn", "ecnseen") if o in info.get("options", ())]
    parts.append(str(info.get("congestion_control", "")))
    if "wscale" in info.get("options", ()):
        parts.append(f"wscale:{info['snd_wscale']},{info['rcv_wscale']}")
    parts.append(f"rto:{_ms(info['rto'])}")
    if info.get("backoff"):
        parts.append(f"backoff:{info['backoff']}")
    if info.get("rtt"):
        parts.append(f"rtt:{_ms(info['rtt'])}/{_ms(info['rttvar'])}")
    parts.append(f"ato:{_ms(info['ato'])}")
    parts.append(f"mss:{info['snd_mss']}")
    parts.append(f"rcvmss:{info['rcv_mss']}")
    parts.append(f"cwnd:{info['snd_cwnd']}")
    if info.get("snd_ssthresh", 0xFFFF) < 0xFFFF:  # ss hides the "infinite" initial ssthresh
        parts.append(f"ssthresh:{info['snd_ssthresh']}")
    for k in (
        "bytes_acked",
        "bytes_received",
        "segs_out",
        "segs_in",
        "data_segs_out",
        "data_segs_in",
    ):
        if info.get(k):
            parts.append(f"{k}:{info[k]}")
    if info.get("unacked"):
        parts.append(f"unacked:{info['unacked']}")
    if info.get("total_retrans"):
        parts.append(f"retrans:{info.get('retransmits', 0)}/{info['total_retrans']}")
    if info.get("min_rtt"):
        parts.append(f"minrtt:{_ms(info['min_rtt'])}")
    parts.append(f"snd_wnd:{info['snd_wnd']}")
    parts.append(f"rcv_wnd:{info['rcv_wnd']}")
    return " ".join(p for p in parts if p)


def _addr(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def _port_text(port: int) -> str:
    return str(port) if port else "*"


def render_table(
    records: Iterable[dict[str, Any]],
    *,
    show_state: bool = True,
    timers: bool = False,
    info: bool = False,
    header: bool = True,
) -> list[str]:
    """ss -tan's table: State, Recv-Q, Send-Q, Local Address:Port, Peer Address:Port
    (addresses right-aligned against the colon, as ss does), plus ``timer:(...)``
    with ``timers`` and a tab-indented tcp_info line under each connection with
    ``info``.  Trailing spaces are stripped."""
    rows: list[tuple[str, str, str, str, str, str, str, str, str | None]] = []
    for r in records:
        rows.append(
            (
                SS_NAMES.get(r["state"], r["state"]),
                str(r["recv_q"]),
                str(r["send_q"]),
                _addr(r["local_addr"]),
                _port_text(r["local_port"]),
                _addr(r["remote_addr"]),
                _port_text(r["remote_port"]),
                timer_text(r.get("timer")) if timers or info else "",
                info_text(r["info"]) if info and r.get("info") else None,
            )
        )
    heads = ("State", "Recv-Q", "Send-Q", "Local Address", "Port", "Peer Address", "Port")
    w = [max([len(h)] + [len(row[i] or "") for row in rows]) for i, h in enumerate(heads)]

    def line(cols: tuple[str, ...], extra: str = "") -> str:
        st, rq, sq, la, lp, ra, rp = cols
        text = (f"{st:<{w[0]}} " if show_state else "") + (
            f"{rq:<{w[1]}} {sq:<{w[2]}} {la:>{w[3]}}:{lp:<{w[4]}} {ra:>{w[5]}}:{rp:<{w[6]}}"
        )
        return (text + (" " + extra if extra else "")).rstrip()

    out = [line(heads)] if header else []
    for row in rows:
        out.append(line(row[:7], row[7]))
        if row[8] is not None:
            out.append("\t " + row[8])
    return out


# ---------------------------------------------------------------------- the command
def register(sub: Any) -> None:
    p = sub.add_parser(
        "ss",
        help="list the sockets of a running tcpstack, like ss -tan",
        description="The sockets of a running `tcpstack up` (through its control socket), one line "
        "each as `ss -tan` prints the kernel's: LISTEN (Recv-Q = accept queue, Send-Q = backlog), "
        "half-open SYN-RECV, connections, TIME-WAIT. FILTER is ss's: `state NAME` (established, "
        "time-wait, listening, connected, ...; repeatable), `exclude NAME`, `sport = :PORT`, "
        "`dport = :PORT` (also != < <= > >=), ANDed.",
        epilog=f"State words: {', '.join(STATE_GROUPS)} (or RFC 9293 names). --json uses RFC 9293 names.",
    )
    add_control_args(p)
    p.add_argument(
        "-i",
        "--info",
        action="store_true",
        help="per-connection info: rtt/rttvar (ms), rto, cwnd, ssthresh, windows, mss, retrans; and timers",
    )
    p.add_argument(
        "-o",
        "--options",
        action="store_true",
        help="timers: timer:(on|keepalive|timewait|persist,EXPIRY,N)",
    )
    p.add_argument("-l", "--listening", action="store_true", help="only listening sockets")
    p.add_argument(
        "--port",
        type=_port_arg,
        metavar="PORT",
        help="only sockets with PORT as local or peer port",
    )
    p.add_argument("-H", "--no-header", action="store_true", help="no header line")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON object: {"sockets": [...]}, RFC 9293 state names',
    )
    # ss habits, accepted and ignored: tcpstack has only TCP, prints numbers, shows all states.
    for flag, what in (("-t", "--tcp"), ("-a", "--all"), ("-n", "--numeric")):
        p.add_argument(flag, what, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("filter", nargs="*", metavar="FILTER", help="ss filter words (see above)")
    p.set_defaults(func=run)


def _port_arg(text: str) -> int:
    try:
        return _port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    try:
        states, ports = parse_filter(args.filter)
    except ValueError as exc:
        return fail("ss", str(exc))
    if args.listening:
        states = [S.LISTEN.value] if states is None else [s for s in states if s == S.LISTEN.value]
    single_state = states is not None and len(states) == 1 and not args.listening
    req: dict[str, Any] = {
        "info": args.info or args.json,
        "timers": args.options or args.info or args.json,
    }
    if states is not None:
        req["states"] = states
    if args.port is not None:
        ports.append(["port", "==", args.port])
    if ports:
        req["ports"] = ports
    try:
        result = request(control_path(args), "ss", **req)
    except ControlError as exc:
        return fail("ss", str(exc))
    records = result["sockets"]
    if args.json:
        print(json.dumps({"sockets": records}, indent=1))
        return 0
    for ln in render_table(
        records,
        show_state=not single_state,
        timers=args.options,
        info=args.info,
        header=not args.no_header,
    ):
        print(ln)
    return 0
