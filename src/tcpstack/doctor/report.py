"""From parsed /proc text to the numbers the doctor reports.

``collect()`` reads a source once (twice for ``interval``), ``analyze()``
turns sockets, counters and tunables into a :class:`Report`; the findings
(:mod:`tcpstack.doctor.findings`) are computed from the report alone, so they
can be tested on hand-made reports.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from .procnet import (
    RFC9293_STATES,
    AddressDecoder,
    TcpSocket,
    parse_mib_pairs,
    parse_sockstat,
    parse_sysctl_value,
    parse_tcp_table,
)
from .source import COUNTER_FILES, OSRELEASE, TUNABLE_FILES, OwnerMap, all_files

# Counters of interest: (group in /proc/net/{netstat,snmp}, Linux MIB name).
COUNTERS: tuple[tuple[str, str], ...] = (
    ("Tcp", "ActiveOpens"),
    ("Tcp", "PassiveOpens"),
    ("Tcp", "AttemptFails"),
    ("Tcp", "EstabResets"),
    ("Tcp", "CurrEstab"),
    ("Tcp", "InSegs"),
    ("Tcp", "OutSegs"),
    ("Tcp", "RetransSegs"),
    ("Tcp", "InErrs"),
    ("Tcp", "OutRsts"),
    ("Tcp", "InCsumErrors"),
    ("TcpExt", "ListenOverflows"),
    ("TcpExt", "ListenDrops"),
    ("TcpExt", "SyncookiesSent"),
    ("TcpExt", "SyncookiesRecv"),
    ("TcpExt", "SyncookiesFailed"),
    ("TcpExt", "TCPReqQFullDoCookies"),
    ("TcpExt", "TCPReqQFullDrop"),
    ("TcpExt", "TCPTimeWaitOverflow"),
    ("TcpExt", "TW"),
    ("TcpExt", "TWKilled"),
    ("TcpExt", "TWRecycled"),
    ("TcpExt", "TCPAbortOnTimeout"),
    ("TcpExt", "TCPAbortOnData"),
    ("TcpExt", "TCPAbortOnClose"),
    ("TcpExt", "TCPAbortOnMemory"),
    ("TcpExt", "TCPAbortOnLinger"),
    ("TcpExt", "TCPAbortFailed"),
    ("TcpExt", "TCPSynRetrans"),
    ("TcpExt", "TCPTimeouts"),
    ("TcpExt", "TCPLostRetransmit"),
    ("TcpExt", "TCPBacklogDrop"),
    ("TcpExt", "TCPRcvQDrop"),
    ("TcpExt", "PruneCalled"),
    ("TcpExt", "RcvPruned"),
    ("TcpExt", "OfoPruned"),
    ("TcpExt", "TCPOFODrop"),
    ("TcpExt", "TCPMemoryPressures"),
    ("TcpExt", "PAWSEstab"),
    ("TcpExt", "TCPChallengeACK"),
)


@dataclass
class Sample:
    """What one read of a source produced, parsed."""

    sockets: list[TcpSocket]
    mib: dict[str, dict[str, int]]
    sockstat: dict[str, dict[str, int]]
    tunables: dict[str, Any]
    kernel: str | None
    missing: list[str]
    taken_monotonic: float


def _parse_counters(texts: dict[str, str | None]) -> dict[str, dict[str, int]]:
    mib: dict[str, dict[str, int]] = {}
    for rel in COUNTER_FILES:
        text = texts.get(rel)
        if text:
            for group, values in parse_mib_pairs(text).items():
                mib.setdefault(group, {}).update(values)
    return mib


def collect(source: Any) -> Sample:
    texts = source.read(all_files())
    taken = time.monotonic()
    missing = [rel for rel, text in texts.items() if text is None]
    decode = AddressDecoder(source.little_endian)
    sockets: list[TcpSocket] = []
    for rel, family in (("net/tcp", 4), ("net/tcp6", 6)):
        text = texts.get(rel)
        if text:
            sockets.extend(parse_tcp_table(text, family, decode))
    tunables: dict[str, Any] = {}
    for name, rel in TUNABLE_FILES.items():
        text = texts.get(rel)
        tunables[name] = None if text is None else parse_sysctl_value(text)
    sockstat = parse_sockstat(texts.get("net/sockstat") or "")
    kernel = (texts.get(OSRELEASE) or "").strip() or None
    return Sample(sockets, _parse_counters(texts), sockstat, tunables, kernel, missing, taken)


def collect_counters(source: Any) -> tuple[dict[str, dict[str, int]], float]:
    texts = source.read(COUNTER_FILES)
    return _parse_counters(texts), time.monotonic()


def flat_counters(mib: dict[str, dict[str, int]]) -> dict[str, int | None]:
    """Counters of interest under their Linux MIB names (as ``nstat`` shows
    them without the group prefix); ``None`` if this kernel lacks one."""
    return {name: mib.get(group, {}).get(name) for group, name in COUNTERS}


# --- the report ---------------------------------------------------------------


@dataclass
class Finding:
    severity: str  # "info" | "warning" | "critical"
    id: str
    title: str
    detail: str
    advice: str

    def to_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "id": self.id,
            "title": self.title,
            "detail": self.detail,
            "advice": self.advice,
        }


@dataclass
class Report:
    source: str
    kernel: str | None
    states: dict[str, int]
    states_by_family: dict[str, dict[str, int]]
    other_states: dict[str, int]
    owners: dict[str, list[dict[str, Any]]]
    unowned: dict[str, int]
    listeners: list[dict[str, Any]]
    ports_in: list[dict[str, Any]]
    ports_out: list[dict[str, Any]]
    queues: dict[str, dict[str, int]]
    top_queues: list[dict[str, Any]]
    retransmitting: list[dict[str, Any]]
    orphans: dict[str, int]
    close_wait_detail: dict[str, int]
    waiting_accept: int
    tuple_pressure: dict[str, Any] | None
    counters: dict[str, int | None]
    counters_delta: dict[str, int] | None
    interval: float | None
    tunables: dict[str, Any]
    sockstat: dict[str, dict[str, int]]
    owners_complete: bool
    unreadable_pids: int
    total_sockets: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kernel": self.kernel,
            "total_sockets": self.total_sockets,
            "states": self.states,
            "states_by_family": self.states_by_family,
            "other_states": self.other_states,
            "owners": self.owners,
            "unowned": self.unowned,
            "owners_complete": self.owners_complete,
            "unreadable_pids": self.unreadable_pids,
            "ports": {
                "listening": self.listeners,
                "incoming": self.ports_in,
                "outgoing": self.ports_out,
            },
            "queues": self.queues,
            "top_queues": self.top_queues,
            "retransmitting": self.retransmitting,
            "orphans": self.orphans,
            "close_wait_detail": self.close_wait_detail,
            "waiting_accept": self.waiting_accept,
            "tuple_pressure": self.tuple_pressure,
            "counters": self.counters,
            "counters_delta": self.counters_delta,
            "interval_seconds": self.interval,
            "tunables": self.tunables,
            "sockstat": self.sockstat,
            "findings": [f.to_dict() for f in self.findings],
            "timings_ms": self.timings_ms,
        }


def _ephemeral_range(tunables: dict[str, Any]) -> tuple[int, int]:
    rng = tunables.get("ip_local_port_range")
    if isinstance(rng, list) and len(rng) == 2:
        return rng[0], rng[1]
    return 32768, 60999  # the kernel's documented default


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def analyze(
    sample: Sample,
    owners: OwnerMap,
    source_label: str,
    later: tuple[dict[str, dict[str, int]], float] | None = None,
    top: int = 20,
) -> Report:
    sockets = sample.sockets
    states = dict.fromkeys(RFC9293_STATES, 0)
    by_family = {"ipv4": dict.fromkeys(RFC9293_STATES, 0), "ipv6": dict.fromkeys(RFC9293_STATES, 0)}
    other: Counter[str] = Counter()
    owner_counts: dict[str, Counter[int]] = {s: Counter() for s in RFC9293_STATES}
    unowned = dict.fromkeys(RFC9293_STATES, 0)
    queues = {s: {"recv_q": 0, "send_q": 0, "sockets_with_data": 0} for s in RFC9293_STATES}

    listen_ports: set[int] = set()
    for s in sockets:
        if s.state_code == 0x0A:
            listen_ports.add(s.local_port)
    eph_lo, eph_hi = _ephemeral_range(sample.tunables)

    ports_in: dict[int, Counter[str]] = defaultdict(Counter)
    ports_out: dict[int, Counter[str]] = defaultdict(Counter)
    tuples: Counter[tuple[str, str, int]] = Counter()
    orphans: Counter[str] = Counter()
    waiting_accept = 0
    queued: list[TcpSocket] = []
    retransmitting: list[TcpSocket] = []
    listeners: list[TcpSocket] = []
    inode_pids = owners.inode_pids
    # After a FIN arrives, Recv-Q counts it as one byte (rcv_nxt moved past
    # it) until the application reads the end of stream; so in CLOSE-WAIT
    # Recv-Q 1 means "EOF not read", and N > 1 means N - 1 bytes of data too.
    cw_eof_unread = cw_data_unread = cw_bytes = 0
    close_wait_pairs: set[tuple[str, int, str, int]] = set()
    orphan_fw2: list[TcpSocket] = []

    for s in sockets:
        st = s.state
        if st not in states:
            other[st] += 1
            continue
        states[st] += 1
        by_family["ipv4" if s.family == 4 else "ipv6"][st] += 1
        if s.inode:
            pids = inode_pids.get(s.inode)
            if pids:
                counts = owner_counts[st]
                for pid in pids:
                    counts[pid] += 1
            else:
                unowned[st] += 1
        else:
            unowned[st] += 1
        if st == "LISTEN":
            listeners.append(s)
            continue
        if s.recv_q or s.send_q:
            q = queues[st]
            q["recv_q"] += s.recv_q
            q["send_q"] += s.send_q
            q["sockets_with_data"] += 1
            queued.append(s)
        if s.retransmits and st != "SYN-RECEIVED":
            # (a request socket's count is SYN-ACK retries: see the SYN finding)
            retransmitting.append(s)
        # Incoming if it sits on a listening port; with no listener left (a
        # server's TIME-WAIT after it closed), a non-ephemeral local port
        # talking to an ephemeral remote one is taken as incoming too.
        incoming = s.local_port in listen_ports or (
            not (eph_lo <= s.local_port <= eph_hi) and eph_lo <= s.remote_port <= eph_hi
        )
        if incoming:
            ports_in[s.local_port][st] += 1
            if st == "ESTABLISHED" and not s.inode:
                waiting_accept += 1  # completed handshake, not yet accept()ed
        else:
            ports_out[s.remote_port][st] += 1
            tuples[(s.local_addr, s.remote_addr, s.remote_port)] += 1
        if not s.inode and st in ("FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "LAST-ACK"):
            orphans[st] += 1
            if st == "FIN-WAIT-2":
                orphan_fw2.append(s)
        elif st == "CLOSE-WAIT":
            close_wait_pairs.add((s.local_addr, s.local_port, s.remote_addr, s.remote_port))
            if s.recv_q:
                cw_eof_unread += 1
                if s.recv_q > 1:
                    cw_data_unread += 1
                    cw_bytes += s.recv_q - 1

    # Orphaned FIN-WAIT-2 whose peer is a CLOSE-WAIT socket on this same host.
    fw2_local_peer = sum(
        1
        for s in orphan_fw2
        if (s.remote_addr, s.remote_port, s.local_addr, s.local_port) in close_wait_pairs
    )

    def owner_list(counter: Counter[int]) -> list[dict[str, Any]]:
        return [
            {"pid": pid, "command": owners.comm(pid), "count": n}
            for pid, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    owners_json = {st: owner_list(owner_counts[st]) for st in RFC9293_STATES}

    listeners_json = []
    for s in sorted(listeners, key=lambda x: (x.local_port, x.family, x.local_addr)):
        pids = inode_pids.get(s.inode, []) if s.inode else []
        listeners_json.append(
            {
                "family": f"ipv{s.family}",
                "address": s.local_addr,
                "port": s.local_port,
                "accept_queue": s.recv_q,
                "owners": [{"pid": p, "command": owners.comm(p)} for p in pids],
            }
        )

    def port_list(table: dict[int, Counter[str]]) -> list[dict[str, Any]]:
        rows = [
            {"port": port, "total": sum(c.values()), "states": dict(c.most_common())}
            for port, c in table.items()
        ]
        rows.sort(key=lambda r: (-r["total"], r["port"]))
        return rows

    def sock_row(s: TcpSocket) -> dict[str, Any]:
        pids = inode_pids.get(s.inode, []) if s.inode else []
        return {
            "state": s.state,
            "local": _endpoint(s.local_addr, s.local_port),
            "remote": _endpoint(s.remote_addr, s.remote_port),
            "recv_q": s.recv_q,
            "send_q": s.send_q,
            "retransmits": s.retransmits,
            "owners": [{"pid": p, "command": owners.comm(p)} for p in pids],
        }

    queued.sort(key=lambda x: -(x.recv_q + x.send_q))
    retransmitting.sort(key=lambda x: -x.retransmits)

    tuple_pressure = None
    if tuples:
        (laddr, raddr, rport), n = tuples.most_common(1)[0]
        size = eph_hi - eph_lo + 1
        tuple_pressure = {
            "local_address": laddr,
            "remote": _endpoint(raddr, rport),
            "sockets": n,
            "ephemeral_ports": size,
            "fraction": round(n / size, 4) if size > 0 else None,
        }

    counters = flat_counters(sample.mib)
    delta = None
    interval = None
    if later is not None:
        mib2, t2 = later
        after = flat_counters(mib2)
        delta = {
            k: after[k] - v  # type: ignore[operator]
            for k, v in counters.items()
            if v is not None and after.get(k) is not None
        }
        interval = round(t2 - sample.taken_monotonic, 3)
        counters = after

    return Report(
        source=source_label,
        kernel=sample.kernel,
        states=states,
        states_by_family=by_family,
        other_states=dict(other),
        owners=owners_json,
        unowned=unowned,
        listeners=listeners_json,
        ports_in=port_list(ports_in),
        ports_out=port_list(ports_out),
        queues=queues,
        top_queues=[sock_row(s) for s in queued[:top]],
        retransmitting=[sock_row(s) for s in retransmitting[:top]],
        orphans=dict(orphans),
        close_wait_detail={
            "eof_not_read": cw_eof_unread,
            "data_not_read": cw_data_unread,
            "unread_bytes": cw_bytes,
            "peer_orphans_on_this_host": fw2_local_peer,
        },
        waiting_accept=waiting_accept,
        tuple_pressure=tuple_pressure,
        counters=counters,
        counters_delta=delta,
        interval=interval,
        tunables=sample.tunables,
        sockstat=sample.sockstat,
        owners_complete=owners.available and owners.unreadable_pids == 0,
        unreadable_pids=owners.unreadable_pids,
        total_sockets=len(sockets),
    )
