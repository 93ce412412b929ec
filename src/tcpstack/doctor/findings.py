"""The doctor's rules: a :class:`Report` in, plain-words findings out.

Every threshold is a named constant here and is listed in docs/doctor.md.
Every kernel fact a rule states was checked against the kernel's own source or
documentation (Documentation/networking/ip-sysctl.rst, snmp_counter.rst,
include/net/tcp.h, net/ipv4/tcp_ipv4.c); docs/doctor.md names them.

Counters in /proc/net/{netstat,snmp} are cumulative per network namespace
(since boot for the host's). With ``--interval`` the report carries deltas
and the rules speak of what is *rising now*; without, of totals so far.
"""

from __future__ import annotations

from typing import Any

from .report import Finding, Report

# Thresholds (documented in docs/doctor.md).
CLOSE_WAIT_WARNING = 10  # CLOSE-WAIT sockets: >= this is a warning (below: info)
CLOSE_WAIT_CRITICAL = 1000
SYN_RECV_WARNING = 100  # half-open connections in SYN-RECEIVED
SYN_RECV_CRITICAL = 1000
ACCEPT_QUEUE_INFO = 10  # connections waiting in one listener's accept queue
TIME_WAIT_INFO = 1  # any TIME-WAIT gets an explanation (info)
TW_BUCKETS_WARNING = 0.8  # TIME-WAIT >= 80% of tcp_max_tw_buckets
PORTS_WARNING = 0.5  # sockets to one (src addr, dst addr, dst port) >= 50% of the ephemeral range
PORTS_CRITICAL = 0.9
ORPHAN_FIN_WAIT2_WARNING = 1000  # orphaned FIN-WAIT-2 (any number is reported as info)
RETRANS_MIN_SEGMENTS = 10_000  # need this many OutSegs before judging the ratio
RETRANS_WARNING = 0.02  # RetransSegs / OutSegs
RETRANS_CRITICAL = 0.10
RETRANSMITTING_WARNING = 10  # sockets retransmitting right now
RETRIES2_MIN = 8  # ip-sysctl.rst: RFC 1122's 100 s needs tcp_retries2 >= 8
SOMAXCONN_LOW = 1024
PORT_RANGE_LOW = 10_000

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _owners_text(owners: list[dict[str, Any]], limit: int = 5) -> str:
    if not owners:
        return "no owning process found"
    parts = [f"pid {o['pid']} ({o['command']}) holds {o['count']}" for o in owners[:limit]]
    if len(owners) > limit:
        parts.append(f"and {len(owners) - limit} more processes")
    return "; ".join(parts)


def _counter(report: Report, name: str) -> tuple[int, bool]:
    """(value, rising): the delta over ``--interval`` if there was one, else
    the cumulative total. ``rising`` is True only for a positive delta."""
    if report.counters_delta is not None and name in report.counters_delta:
        d = report.counters_delta[name]
        return d, d > 0
    v = report.counters.get(name)
    return (v or 0), False


def _when(report: Report) -> str:
    if report.counters_delta is not None:
        return f"in the last {report.interval:g} s"
    return "since the namespace came up (boot, for the host)"


def _tun(report: Report, name: str) -> Any:
    return report.tunables.get(name)


# --- rules ------------------------------------------------------------------------


def close_wait(report: Report) -> list[Finding]:
    n = report.states["CLOSE-WAIT"]
    if n == 0:
        return []
    severity = "info"
    if n >= CLOSE_WAIT_CRITICAL:
        severity = "critical"
    elif n >= CLOSE_WAIT_WARNING:
        severity = "warning"
    owners = report.owners["CLOSE-WAIT"]
    cw = report.close_wait_detail
    detail = (
        f"{_plural(n, 'socket')} in CLOSE-WAIT: the peer sent its FIN (it closed its side) and "
        f"the local application has not called close() yet. Owners: {_owners_text(owners)}."
    )
    if report.unowned["CLOSE-WAIT"]:
        detail += (
            f" {report.unowned['CLOSE-WAIT']} belong to processes this scan could not see "
            "(another PID namespace, or not running as root)."
        )
    if cw.get("eof_not_read"):
        detail += (
            f" {cw['eof_not_read']} have not even read the end of stream (their Recv-Q counts "
            "the FIN as 1)"
        )
        if cw.get("data_not_read"):
            detail += (
                f", {cw['data_not_read']} of them with {cw['unread_bytes']} bytes of data unread"
            )
        detail += "."
    if cw.get("peer_orphans_on_this_host"):
        detail += (
            f" Their peers are on this host too: {cw['peer_orphans_on_this_host']} orphaned "
            "FIN-WAIT-2 sockets wait for these to close."
        )
    if severity == "info":
        detail += " A few are normal for an instant between the FIN and close()."
    advice = (
        "This is an application bug, not a kernel setting: the owning process must close() the "
        "socket once read() returns 0 (end of stream) or the peer has gone, including on error "
        "paths and in connection pools. No sysctl releases CLOSE-WAIT sockets: tcp_fin_timeout "
        "governs only orphaned FIN-WAIT-2 sockets, and TIME-WAIT settings do not apply. Only "
        "close() in the owner (or the owner exiting) frees them; restarting it is a stopgap."
    )
    return [
        Finding(
            severity, "close-wait", f"{_plural(n, 'socket')} stuck in CLOSE-WAIT", detail, advice
        )
    ]


def syn_received(report: Report) -> list[Finding]:
    half_open = report.states["SYN-RECEIVED"]
    cookies, cookies_rising = _counter(report, "SyncookiesSent")
    if half_open < SYN_RECV_WARNING and cookies == 0:
        return []
    severity = "warning"
    if cookies_rising or half_open >= SYN_RECV_CRITICAL:
        severity = "critical"
    per_port = sorted(
        (
            (row["states"].get("SYN-RECEIVED", 0), row["port"])
            for row in report.ports_in
            if row["states"].get("SYN-RECEIVED")
        ),
        reverse=True,
    )
    where = ", ".join(f"port {p}: {c}" for c, p in per_port[:5]) or "none right now"
    recv, _ = _counter(report, "SyncookiesRecv")
    failed, _ = _counter(report, "SyncookiesFailed")
    detail = (
        f"{_plural(half_open, 'half-open connection')} in SYN-RECEIVED ({where}); "
        f"SYN cookies sent {_when(report)}: {cookies} (valid cookie ACKs back: {recv}, "
        f"invalid: {failed}). The kernel answers with a SYN cookie instead of remembering the "
        "connection when a listener's SYN queue is full (its length reached the listen "
        "backlog). Many half-open connections with few cookies coming back usually mean "
        "spoofed SYNs (a flood); cookies that do come back mean real clients arriving faster "
        "than the queue allows."
    )
    syncookies = _tun(report, "tcp_syncookies")
    advice = (
        "Keep net.ipv4.tcp_syncookies=1 (the default): cookies are used only when a SYN queue "
        "overflows. If this is a flood, filter it upstream or with a firewall rate limit. If it "
        "is real load, the listen backlog is too small: raise the backlog the application "
        "passes to listen() (it is silently capped at net.core.somaxconn, currently "
        f"{_tun(report, 'somaxconn')}) and make the application accept() faster."
    )
    if syncookies == 0:
        advice += " tcp_syncookies is 0 here: under a flood the kernel will simply drop SYNs."
    return [
        Finding(
            severity,
            "syn-received",
            f"{_plural(half_open, 'half-open connection')}; SYN cookies sent: {cookies}",
            detail,
            advice,
        )
    ]


def accept_queue(report: Report) -> list[Finding]:
    overflows, rising = _counter(report, "ListenOverflows")
    drops, _ = _counter(report, "ListenDrops")
    backed_up = [lst for lst in report.listeners if lst["accept_queue"] >= ACCEPT_QUEUE_INFO]
    if overflows == 0 and not backed_up:
        return []
    names = []
    for lst in backed_up[:5]:
        who = (
            ", ".join(f"pid {o['pid']} ({o['command']})" for o in lst["owners"]) or "owner unknown"
        )
        names.append(f"{lst['address']}:{lst['port']} has {lst['accept_queue']} waiting [{who}]")
    detail = (
        f"ListenOverflows {_when(report)}: {overflows} (ListenDrops: {drops}). An overflow is a "
        "connection attempt dropped (its SYN, or the ACK completing its handshake) because the "
        "listener's accept queue (handshakes completed, not yet accept()ed) was full."
    )
    if names:
        detail += " Right now: " + "; ".join(names) + "."
    severity = "critical" if rising else ("warning" if overflows else "info")
    advice = (
        "The application is not calling accept() fast enough for its connection rate. Accept "
        "faster (more acceptor threads/processes, SO_REUSEPORT), and give listen() a larger "
        "backlog; the kernel silently caps it at net.core.somaxconn "
        f"(now {_tun(report, 'somaxconn')}), so raise that too if needed. Clients see the "
        "dropped SYNs as connect delays (SYN retransmissions), not errors."
    )
    return [Finding(severity, "accept-queue", "Listen queue overflows", detail, advice)]


def time_wait(report: Report) -> list[Finding]:
    out: list[Finding] = []
    n = report.states["TIME-WAIT"]
    tw_in = sum(r["states"].get("TIME-WAIT", 0) for r in report.ports_in)
    tw_out = sum(r["states"].get("TIME-WAIT", 0) for r in report.ports_out)
    if n >= TIME_WAIT_INFO:
        detail = (
            f"{_plural(n, 'socket')} in TIME-WAIT ({tw_in} on connections this host accepted, "
            f"{tw_out} on connections it opened). TIME-WAIT lands on whichever side closes "
            "first and lasts 60 s on Linux (TCP_TIMEWAIT_LEN, fixed at compile time). It is "
            "normal and cheap: a small mini-socket of a few hundred bytes, no buffers, no file "
            "descriptor (hence no owning process). It protects the next connection on the same "
            "4-tuple from old duplicate segments."
        )
        if tw_in > tw_out and tw_in:
            detail += (
                " Most are on the server side: the server closes first (e.g. HTTP without "
                "keep-alive). That costs the server nothing but memory."
            )
        advice = (
            "Usually nothing to do. tcp_fin_timeout does not shorten TIME-WAIT (it bounds "
            "orphaned FIN-WAIT-2). tcp_tw_recycle no longer exists (removed in Linux 4.12; it "
            "broke clients behind NAT): a runbook that says to enable it is wrong. "
            "tcp_tw_reuse only helps OUTGOING connections (connect() may reuse a TIME-WAIT "
            "4-tuple when timestamps prove it safe); it does nothing for a server's TIME-WAIT. "
            f"Here tcp_tw_reuse={_tun(report, 'tcp_tw_reuse')} (0 off, 1 all outgoing "
            "connections, 2 loopback only: the default)."
        )
        out.append(
            Finding("info", "time-wait", f"{_plural(n, 'socket')} in TIME-WAIT", detail, advice)
        )

    overflow, rising = _counter(report, "TCPTimeWaitOverflow")
    limit = _tun(report, "tcp_max_tw_buckets")
    near = isinstance(limit, int) and limit > 0 and n >= TW_BUCKETS_WARNING * limit
    if overflow or near:
        detail = (
            f"TCPTimeWaitOverflow {_when(report)}: {overflow}; TIME-WAIT now {n} of "
            f"tcp_max_tw_buckets={limit}. Past the limit the kernel destroys the socket at once "
            "instead of keeping it in TIME-WAIT (and prints a warning), losing TIME-WAIT's "
            "protection against old duplicates."
        )
        advice = (
            "The kernel documentation says never to lower tcp_max_tw_buckets, rather to raise "
            "it if memory allows (each entry is small). Better still, open fewer short "
            "connections: keep-alive and connection pools."
        )
        out.append(Finding("warning", "tw-buckets", "TIME-WAIT table at its limit", detail, advice))

    recycle = _tun(report, "tcp_tw_recycle")
    if recycle is not None:
        sev = "critical" if recycle else "warning"
        out.append(
            Finding(
                sev,
                "tw-recycle",
                f"tcp_tw_recycle exists here (value {recycle}): a kernel older than 4.12",
                "tcp_tw_recycle drops SYNs from clients behind a shared NAT (their timestamps "
                "are not monotonic across hosts); it was removed in Linux 4.12.",
                "Set tcp_tw_recycle=0 and remove it from sysctl.conf; upgrade the kernel.",
            )
        )

    tp = report.tuple_pressure
    if tp and tp["fraction"] is not None and tp["fraction"] >= PORTS_WARNING:
        sev = "critical" if tp["fraction"] >= PORTS_CRITICAL else "warning"
        detail = (
            f"{tp['sockets']} sockets from {tp['local_address']} to {tp['remote']} use "
            f"{tp['fraction']:.0%} of the {tp['ephemeral_ports']} ephemeral ports "
            f"(ip_local_port_range {_tun(report, 'ip_local_port_range')}). Each connection to "
            "one destination address and port needs its own local port, TIME-WAIT included; "
            "when they run out connect() fails with EADDRNOTAVAIL."
        )
        advice = (
            "Reuse connections (keep-alive, pooling) instead of opening one per request; widen "
            "net.ipv4.ip_local_port_range; spread over more source addresses or destination "
            "addresses/ports. net.ipv4.tcp_tw_reuse=1 lets connect() reuse TIME-WAIT 4-tuples "
            "(client side only, needs tcp_timestamps)."
        )
        out.append(Finding(sev, "port-exhaustion", "Ephemeral ports running out", detail, advice))
    return out


def fin_wait(report: Report) -> list[Finding]:
    orphan_fw2 = report.orphans.get("FIN-WAIT-2", 0)
    if not orphan_fw2:
        return []
    fin_timeout = _tun(report, "tcp_fin_timeout")
    sev = "warning" if orphan_fw2 >= ORPHAN_FIN_WAIT2_WARNING else "info"
    owned = report.states["FIN-WAIT-2"] - orphan_fw2
    detail = (
        f"{_plural(orphan_fw2, 'orphaned FIN-WAIT-2 socket')}: this host closed the "
        "connection, the peer acknowledged our FIN but has not sent its own. The application "
        "is gone (no owner); the kernel keeps the socket for tcp_fin_timeout "
        f"(now {fin_timeout} s) and then drops it."
    )
    if owned > 0:
        detail += (
            f" Another {owned} FIN-WAIT-2 sockets are still owned (the application did "
            "shutdown(SHUT_WR) and waits); tcp_fin_timeout does not apply to those."
        )
    local = report.close_wait_detail.get("peer_orphans_on_this_host", 0)
    if local:
        detail += (
            f" {local} of them wait on CLOSE-WAIT sockets of this same host: the fix is the "
            "application holding those (see the CLOSE-WAIT finding)."
        )
    advice = (
        "The peers are slow to close their side (or gone). tcp_fin_timeout (default 60 s) "
        "bounds how long orphans linger; lowering it frees them sooner but affects only these "
        "orphans, not TIME-WAIT and not CLOSE-WAIT. Look at the remote endpoints: their "
        "application keeps the connection half-open."
    )
    return [Finding(sev, "orphan-fin-wait-2", "Orphaned FIN-WAIT-2 sockets", detail, advice)]


def retransmissions(report: Report) -> list[Finding]:
    out: list[Finding] = []
    retrans, _ = _counter(report, "RetransSegs")
    segs, _ = _counter(report, "OutSegs")
    if segs >= RETRANS_MIN_SEGMENTS and retrans:
        ratio = retrans / segs
        if ratio >= RETRANS_WARNING:
            sev = "critical" if ratio >= RETRANS_CRITICAL else "warning"
            syn, _ = _counter(report, "TCPSynRetrans")
            out.append(
                Finding(
                    sev,
                    "retransmissions",
                    f"{ratio:.1%} of segments retransmitted",
                    f"RetransSegs {retrans} of OutSegs {segs} {_when(report)} "
                    f"(SYN/SYN-ACK retransmissions: {syn}). Loss on a path, a congested link, "
                    "or a peer that stopped answering.",
                    "Find the flows: the 'retransmitting now' list, `ss -ti` (retrans, rtt), "
                    "and the path's loss (mtr). Kernel knobs rarely fix loss; check the "
                    "network, MTU/PMTU black holes, and NIC errors.",
                )
            )
    aborts, rising = _counter(report, "TCPAbortOnTimeout")
    if aborts:
        out.append(
            Finding(
                "warning" if rising else "info",
                "abort-on-timeout",
                f"{_plural(aborts, 'connection')} given up after timeouts {_when(report)}",
                "TCPAbortOnTimeout counts connections the kernel abandoned because a timer "
                "ran out of retries (retransmissions per tcp_retries2 / tcp_syn_retries / "
                "tcp_orphan_retries, or keepalive probes): the peer is dead or unreachable, or "
                f"the path is black-holing packets. tcp_retries2={_tun(report, 'tcp_retries2')}.",
                "Look for peers that vanish without a FIN/RST (crashed hosts, NAT or firewall "
                "state expiring). Application keepalives or TCP keepalive with shorter "
                "tcp_keepalive_* detect them sooner.",
            )
        )
    now = report.retransmitting
    if now:
        sev = "warning" if len(now) >= RETRANSMITTING_WARNING else "info"
        sample = ", ".join(
            f"{r['state']} {r['local']} -> {r['remote']} ({r['retransmits']}x)" for r in now[:5]
        )
        out.append(
            Finding(
                sev,
                "retransmitting-now",
                f"{_plural(len(now), 'socket')} retransmitting right now",
                f"Sockets with unanswered retransmission timeouts: {sample}. SYN-SENT ones mean "
                "the destination does not answer (filtered, down, or unroutable).",
                "Check reachability of those remote endpoints and loss on the way to them.",
            )
        )
    csum, _ = _counter(report, "InCsumErrors")
    if csum:
        out.append(
            Finding(
                "info",
                "checksum-errors",
                f"{csum} TCP segments with bad checksums {_when(report)}",
                "Corruption on the wire or a faulty NIC/driver checksum offload.",
                "Check NIC and link error counters (ip -s link, ethtool -S).",
            )
        )
    return out


def memory(report: Report) -> list[Finding]:
    names = ("TCPAbortOnMemory", "PruneCalled", "TCPRcvQDrop", "TCPOFODrop", "TCPBacklogDrop")
    values = {n: _counter(report, n) for n in names}
    hits = {n: v for n, (v, _) in values.items() if v}
    if not hits:
        return []
    rising = any(r for _, r in values.values())
    text = ", ".join(f"{n} {v}" for n, v in hits.items())
    return [
        Finding(
            "warning" if rising or hits.get("TCPAbortOnMemory") else "info",
            "memory-pressure",
            "TCP dropped data under memory pressure",
            f"{text} {_when(report)}. Receive queues were pruned or segments dropped because "
            "sockets exceeded their buffer budget (tcp_rmem / tcp_mem), or orphans were reset "
            f"for lack of memory. tcp_mem (pages) = {_tun(report, 'tcp_mem')}.",
            "Applications that read slowly let receive queues grow; read faster. Check "
            "tcp_mem against the machine's memory, and any SO_RCVBUF set too small.",
        )
    ]


def tunables(report: Report) -> list[Finding]:
    out: list[Finding] = []
    ts = _tun(report, "tcp_timestamps")
    if ts == 0:
        out.append(
            Finding(
                "warning",
                "tcp_timestamps",
                "tcp_timestamps=0: TCP timestamps disabled",
                "Without timestamps (RFC 7323) there is no PAWS protection against wrapped "
                "sequence numbers on fast links, RTT measurement is coarser, tcp_tw_reuse can "
                "never reuse a TIME-WAIT socket (the kernel requires a timestamp from it), and "
                "SYN cookies cannot carry window scaling or SACK.",
                "Set net.ipv4.tcp_timestamps=1 (the default).",
            )
        )
    if _tun(report, "tcp_window_scaling") == 0:
        out.append(
            Finding(
                "warning",
                "tcp_window_scaling",
                "tcp_window_scaling=0: windows capped at 64 KiB",
                "Without window scaling (RFC 7323) the receive window cannot exceed 65,535 "
                "bytes, so one connection moves at most 64 KiB per round trip: about 5 Mbit/s "
                "at 100 ms RTT, whatever the link speed.",
                "Set net.ipv4.tcp_window_scaling=1 (the default).",
            )
        )
    if _tun(report, "tcp_sack") == 0:
        out.append(
            Finding(
                "warning",
                "tcp_sack",
                "tcp_sack=0: selective acknowledgements disabled",
                "Without SACK (RFC 2018) a sender learns of only one lost segment per round "
                "trip, so recovery from multiple losses in a window is slow.",
                "Set net.ipv4.tcp_sack=1 (the default).",
            )
        )
    sc = _tun(report, "tcp_syncookies")
    if sc == 0:
        out.append(
            Finding(
                "warning",
                "tcp_syncookies",
                "tcp_syncookies=0: no SYN-flood fallback",
                "When a listener's SYN queue fills, new SYNs are dropped instead of answered "
                "with cookies.",
                "Set net.ipv4.tcp_syncookies=1 (the default; cookies are used only on overflow).",
            )
        )
    elif sc == 2:
        out.append(
            Finding(
                "info",
                "tcp_syncookies",
                "tcp_syncookies=2: SYN cookies for every connection",
                "Every SYN is answered with a cookie, even without overflow; the kernel "
                "documentation offers 2 for testing the effect of cookies.",
                "Use 1 in production.",
            )
        )
    reuse = _tun(report, "tcp_tw_reuse")
    if reuse == 1 and ts == 0:
        out.append(
            Finding(
                "info",
                "tcp_tw_reuse",
                "tcp_tw_reuse=1 has no effect without timestamps",
                "TIME-WAIT reuse needs a timestamp recorded from the old connection.",
                "Enable tcp_timestamps, or drop the tcp_tw_reuse setting.",
            )
        )
    fin = _tun(report, "tcp_fin_timeout")
    if isinstance(fin, int) and fin != 60:
        out.append(
            Finding(
                "info",
                "tcp_fin_timeout",
                f"tcp_fin_timeout={fin} (default 60)",
                "tcp_fin_timeout only limits how long an ORPHANED connection stays in "
                "FIN-WAIT-2. It does not shorten TIME-WAIT (fixed at 60 s) and does nothing "
                "for CLOSE-WAIT. Runbooks often lower it believing otherwise.",
                "Keep it if orphaned FIN-WAIT-2 sockets are a problem here; otherwise the "
                "default is fine.",
            )
        )
    r2 = _tun(report, "tcp_retries2")
    if isinstance(r2, int) and r2 < RETRIES2_MIN:
        out.append(
            Finding(
                "warning",
                "tcp_retries2",
                f"tcp_retries2={r2}: connections give up early",
                "An established connection is dropped after this many unanswered "
                "retransmission timeouts. The kernel documentation notes RFC 1122 recommends "
                "at least 100 s, i.e. a value of at least 8 (default 15, about 924 s).",
                "Raise it to 8 or more unless fast failure is deliberate.",
            )
        )
    smc = _tun(report, "somaxconn")
    if isinstance(smc, int) and smc < SOMAXCONN_LOW:
        out.append(
            Finding(
                "info",
                "somaxconn",
                f"net.core.somaxconn={smc}",
                "Every listen() backlog is silently capped at this value (the default is 4096 "
                "since Linux 5.4, 128 before).",
                "Raise it if busy listeners overflow (see ListenOverflows).",
            )
        )
    rng = _tun(report, "ip_local_port_range")
    if isinstance(rng, list) and len(rng) == 2 and rng[1] - rng[0] + 1 < PORT_RANGE_LOW:
        out.append(
            Finding(
                "info",
                "ip_local_port_range",
                f"narrow ephemeral port range {rng[0]}-{rng[1]}",
                f"Only {rng[1] - rng[0] + 1} local ports for outgoing connections to any one "
                "destination address and port (default 32768-60999).",
                "Widen net.ipv4.ip_local_port_range if this host opens many connections.",
            )
        )
    if _tun(report, "tcp_abort_on_overflow") == 1:
        out.append(
            Finding(
                "info",
                "tcp_abort_on_overflow",
                "tcp_abort_on_overflow=1",
                "Clients are reset when a listener's accept queue is full, instead of having "
                "their handshake ACK ignored so they retry.",
                "The kernel documentation advises this only when you are sure the listener "
                "cannot be tuned to accept faster; 0 is the default.",
            )
        )
    return out


def visibility(report: Report) -> list[Finding]:
    if report.unreadable_pids == 0:
        return []
    return [
        Finding(
            "info",
            "owners-incomplete",
            f"Owners incomplete: {report.unreadable_pids} processes could not be inspected",
            "Their /proc/PID/fd could not be read (permission), so sockets they hold show no "
            "owner.",
            "Run as root to see every owner.",
        )
    ]


RULES = (
    close_wait,
    syn_received,
    accept_queue,
    time_wait,
    fin_wait,
    retransmissions,
    memory,
    tunables,
    visibility,
)


def diagnose(report: Report) -> list[Finding]:
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(rule(report))
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return findings
