"""The doctor's rules and their documented thresholds, on hand-made reports."""

from __future__ import annotations

import pytest

from tcpstack.doctor import findings as F
from tcpstack.doctor.findings import diagnose
from tcpstack.doctor.procnet import RFC9293_STATES, TcpSocket
from tcpstack.doctor.report import COUNTERS, Sample, analyze
from tcpstack.doctor.source import OwnerMap

CODES = {
    "ESTABLISHED": 1,
    "SYN-SENT": 2,
    "SYN-RECEIVED": 3,
    "FIN-WAIT-1": 4,
    "FIN-WAIT-2": 5,
    "TIME-WAIT": 6,
    "CLOSED": 7,
    "CLOSE-WAIT": 8,
    "LAST-ACK": 9,
    "LISTEN": 10,
    "CLOSING": 11,
}

DEFAULT_TUNABLES = {
    "tcp_syncookies": 1,
    "tcp_max_syn_backlog": 2048,
    "tcp_synack_retries": 5,
    "tcp_syn_retries": 6,
    "tcp_abort_on_overflow": 0,
    "tcp_fin_timeout": 60,
    "tcp_tw_reuse": 2,
    "tcp_tw_reuse_delay": 1000,
    "tcp_tw_recycle": None,
    "tcp_max_tw_buckets": 131072,
    "tcp_max_orphans": 131072,
    "tcp_orphan_retries": 0,
    "ip_local_port_range": [32768, 60999],
    "tcp_keepalive_time": 7200,
    "tcp_keepalive_intvl": 75,
    "tcp_keepalive_probes": 9,
    "tcp_retries1": 3,
    "tcp_retries2": 15,
    "tcp_rmem": [4096, 131072, 6291456],
    "tcp_wmem": [4096, 16384, 4194304],
    "tcp_mem": [1, 2, 3],
    "tcp_congestion_control": "cubic",
    "tcp_window_scaling": 1,
    "tcp_timestamps": 1,
    "tcp_sack": 1,
    "somaxconn": 4096,
}

SERVER = "198.18.0.1"
CLIENT = "198.18.0.2"
APP_PID = 4242


def sock(
    state,
    lport,
    rport,
    inode=0,
    laddr=SERVER,
    raddr=CLIENT,
    recv_q=0,
    send_q=0,
    retrans=0,
    family=4,
):
    return TcpSocket(
        family, laddr, lport, raddr, rport, state, CODES[state], send_q, recv_q, retrans, 0, inode
    )


def counters(**values):
    mib = {"Tcp": {}, "TcpExt": {}}
    for group, name in COUNTERS:
        mib[group][name] = values.get(name, 0)
    return mib


def make(sockets=(), tunables=None, before=None, after=None, interval=5.0):
    """Report + findings. ``before``/``after``: counter values; with ``after``
    the report has deltas over ``interval`` seconds."""
    sockets = list(sockets)
    sample = Sample(
        sockets,
        counters(**(before or {})),
        {},
        {**DEFAULT_TUNABLES, **(tunables or {})},
        "6.18",
        [],
        0.0,
    )
    owned = {s.inode: [APP_PID] for s in sockets if s.inode}
    owners = OwnerMap.from_mapping(owned, {APP_PID: "leaky-app"})
    later = (counters(**after), interval) if after is not None else None
    report = analyze(sample, owners, "test", later=later)
    report.findings = diagnose(report)
    return report


def by_id(report):
    return {f.id: f for f in report.findings}


def test_healthy_host_has_no_findings():
    r = make(
        [sock("LISTEN", 80, 0, inode=1, raddr="0.0.0.0"), sock("ESTABLISHED", 80, 40000, inode=2)]
    )
    assert r.findings == []
    assert list(r.states) == list(RFC9293_STATES)
    assert r.owners["ESTABLISHED"] == [{"pid": APP_PID, "command": "leaky-app", "count": 1}]


def close_waits(n, recv_q=0):
    return [
        sock("CLOSE-WAIT", 50000 + i, 443, inode=100 + i, laddr=CLIENT, raddr=SERVER, recv_q=recv_q)
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("n", "severity"),
    [
        (1, "info"),
        (F.CLOSE_WAIT_WARNING - 1, "info"),
        (F.CLOSE_WAIT_WARNING, "warning"),
        (F.CLOSE_WAIT_CRITICAL, "critical"),
    ],
)
def test_close_wait_thresholds(n, severity):
    f = by_id(make(close_waits(n)))["close-wait"]
    assert f.severity == severity
    assert f"pid {APP_PID} (leaky-app) holds {n}" in f.detail
    assert "application bug" in f.advice and "No sysctl" in f.advice
    assert "tcp_fin_timeout governs only orphaned FIN-WAIT-2" in f.advice


def test_close_wait_unread_eof_and_data():
    r = make(
        close_waits(3, recv_q=1)
        + close_waits(0)
        + [sock("CLOSE-WAIT", 51000, 443, inode=999, laddr=CLIENT, raddr=SERVER, recv_q=101)]
    )
    assert r.close_wait_detail == {
        "eof_not_read": 4,
        "data_not_read": 1,
        "unread_bytes": 100,
        "peer_orphans_on_this_host": 0,
    }
    assert "4 have not even read the end of stream" in by_id(r)["close-wait"].detail
    assert "1 of them with 100 bytes of data unread" in by_id(r)["close-wait"].detail


def test_close_wait_peer_is_local_orphan():
    cw = sock("CLOSE-WAIT", 50000, 8080, inode=7, laddr="127.0.0.1", raddr="127.0.0.1")
    fw2 = sock("FIN-WAIT-2", 8080, 50000, inode=0, laddr="127.0.0.1", raddr="127.0.0.1")
    r = make([cw, fw2, sock("LISTEN", 8080, 0, inode=8, laddr="127.0.0.1", raddr="0.0.0.0")])
    assert r.close_wait_detail["peer_orphans_on_this_host"] == 1
    assert (
        "1 of them wait on CLOSE-WAIT sockets of this same host"
        in by_id(r)["orphan-fin-wait-2"].detail
    )


def half_open(n, port=443):
    return [sock("SYN-RECEIVED", port, 1024 + i, raddr=f"203.0.113.{i % 250}") for i in range(n)]


def test_syn_received_thresholds():
    listener = sock("LISTEN", 443, 0, inode=1, raddr="0.0.0.0")
    assert "syn-received" not in by_id(make([listener, *half_open(F.SYN_RECV_WARNING - 1)]))
    f = by_id(make([listener, *half_open(F.SYN_RECV_WARNING)]))["syn-received"]
    assert f.severity == "warning"
    assert "port 443: 100" in f.detail
    assert "tcp_syncookies=1 (the default" in f.advice and "somaxconn" in f.advice
    assert (
        by_id(make([listener, *half_open(F.SYN_RECV_CRITICAL)]))["syn-received"].severity
        == "critical"
    )


def test_syncookies_since_boot_vs_rising():
    f = by_id(make(before={"SyncookiesSent": 7}))["syn-received"]
    assert f.severity == "warning" and "SYN cookies sent since the namespace came up" in f.detail
    r = make(before={"SyncookiesSent": 7}, after={"SyncookiesSent": 50})
    f = by_id(r)["syn-received"]
    assert f.severity == "critical" and "in the last 5 s: 43" in f.detail
    assert r.counters_delta["SyncookiesSent"] == 43
    # counted before, not rising during the interval: nothing to say
    assert "syn-received" not in by_id(
        make(before={"SyncookiesSent": 7}, after={"SyncookiesSent": 7})
    )


def test_syncookies_disabled_advice():
    f = by_id(make(half_open(200), tunables={"tcp_syncookies": 0}))
    assert "will simply drop SYNs" in f["syn-received"].advice
    assert f["tcp_syncookies"].severity == "warning"


def test_accept_queue():
    assert by_id(make(before={"ListenOverflows": 3}))["accept-queue"].severity == "warning"
    assert (
        by_id(make(before={"ListenOverflows": 3}, after={"ListenOverflows": 9}))[
            "accept-queue"
        ].severity
        == "critical"
    )
    lst = sock("LISTEN", 80, 0, inode=1, raddr="0.0.0.0", recv_q=F.ACCEPT_QUEUE_INFO)
    f = by_id(make([lst]))["accept-queue"]
    assert f.severity == "info"
    assert (
        f"198.18.0.1:80 has {F.ACCEPT_QUEUE_INFO} waiting [pid {APP_PID} (leaky-app)]" in f.detail
    )
    assert "accept-queue" not in by_id(
        make([sock("LISTEN", 80, 0, inode=1, raddr="0.0.0.0", recv_q=F.ACCEPT_QUEUE_INFO - 1)])
    )


def test_time_wait_explained_with_current_facts():
    listener = sock("LISTEN", 80, 0, inode=1, raddr="0.0.0.0")
    tws = [sock("TIME-WAIT", 80, 40000 + i) for i in range(5)] + [
        sock("TIME-WAIT", 45000, 5432, laddr=SERVER, raddr="198.18.0.9")
    ]
    f = by_id(make([listener, *tws]))["time-wait"]
    assert f.severity == "info"
    assert (
        "6 sockets in TIME-WAIT (5 on connections this host accepted, 1 on connections it opened)"
        in f.detail
    )
    assert "60 s" in f.detail and "TCP_TIMEWAIT_LEN" in f.detail and "server side" in f.detail
    assert "tcp_fin_timeout does not shorten TIME-WAIT" in f.advice
    assert "removed in Linux 4.12" in f.advice and "NAT" in f.advice
    assert "OUTGOING" in f.advice and "2 loopback only" in f.advice


def test_time_wait_server_side_without_listener_counts_as_incoming():
    # the listener has gone; local port 80 (not ephemeral) to an ephemeral remote port
    r = make([sock("TIME-WAIT", 80, 40000)])
    assert r.ports_in == [{"port": 80, "total": 1, "states": {"TIME-WAIT": 1}}]


def test_tw_buckets():
    tws = [sock("TIME-WAIT", 40000 + i, 80, laddr=CLIENT, raddr=SERVER) for i in range(8)]
    assert by_id(make(tws, tunables={"tcp_max_tw_buckets": 10}))["tw-buckets"].severity == "warning"
    assert "tw-buckets" not in by_id(make(tws[:7], tunables={"tcp_max_tw_buckets": 10}))
    f = by_id(make(before={"TCPTimeWaitOverflow": 1}))["tw-buckets"]
    assert "never to lower" in f.advice


def test_tw_recycle_on_old_kernel():
    assert by_id(make(tunables={"tcp_tw_recycle": 1}))["tw-recycle"].severity == "critical"
    assert by_id(make(tunables={"tcp_tw_recycle": 0}))["tw-recycle"].severity == "warning"


def test_port_exhaustion():
    rng = {"ip_local_port_range": [60000, 60009]}  # 10 ports
    out = [sock("TIME-WAIT", 60000 + i, 5432, laddr=CLIENT, raddr=SERVER) for i in range(9)]
    assert "port-exhaustion" not in by_id(make(out[:4], tunables=rng))
    f = by_id(make(out[:5], tunables=rng))["port-exhaustion"]
    assert f.severity == "warning" and "50% of the 10 ephemeral ports" in f.detail
    assert (
        "ip_local_port_range" in f.advice and "pool" in f.advice and "client side only" in f.advice
    )
    assert by_id(make(out, tunables=rng))["port-exhaustion"].severity == "critical"
    assert by_id(make(out, tunables=rng))["ip_local_port_range"].severity == "info"


def test_orphaned_fin_wait_2():
    one = [sock("FIN-WAIT-2", 80, 40000)]
    f = by_id(make(one, tunables={"tcp_fin_timeout": 30}))["orphan-fin-wait-2"]
    assert f.severity == "info" and "now 30 s" in f.detail
    many = [sock("FIN-WAIT-2", 80, 1024 + i) for i in range(F.ORPHAN_FIN_WAIT2_WARNING)]
    assert by_id(make(many))["orphan-fin-wait-2"].severity == "warning"
    owned = [sock("FIN-WAIT-2", 80, 40001, inode=5)]
    f = by_id(make(one + owned))["orphan-fin-wait-2"]
    assert "Another 1 FIN-WAIT-2 sockets are still owned" in f.detail
    assert "orphan-fin-wait-2" not in by_id(make(owned))


def test_retransmission_ratio():
    assert "retransmissions" not in by_id(make(before={"OutSegs": 9_999, "RetransSegs": 5_000}))
    f = by_id(make(before={"OutSegs": 100_000, "RetransSegs": 2_000}))["retransmissions"]
    assert f.severity == "warning" and f.title == "2.0% of segments retransmitted"
    assert (
        by_id(make(before={"OutSegs": 100_000, "RetransSegs": 10_000}))["retransmissions"].severity
        == "critical"
    )
    assert "retransmissions" not in by_id(make(before={"OutSegs": 100_000, "RetransSegs": 1_999}))


def test_abort_on_timeout_and_retransmitting_now():
    assert by_id(make(before={"TCPAbortOnTimeout": 2}))["abort-on-timeout"].severity == "info"
    r = make(before={"TCPAbortOnTimeout": 2}, after={"TCPAbortOnTimeout": 3})
    assert by_id(r)["abort-on-timeout"].severity == "warning"
    f = by_id(make([sock("SYN-SENT", 45000, 443, inode=9, laddr=CLIENT, raddr=SERVER, retrans=3)]))[
        "retransmitting-now"
    ]
    assert f.severity == "info" and "SYN-SENT 198.18.0.2:45000 -> 198.18.0.1:443 (3x)" in f.detail


def test_memory_pressure_and_checksums():
    assert by_id(make(before={"PruneCalled": 4}))["memory-pressure"].severity == "info"
    assert by_id(make(before={"TCPAbortOnMemory": 1}))["memory-pressure"].severity == "warning"
    assert by_id(make(before={"InCsumErrors": 2}))["checksum-errors"].severity == "info"


@pytest.mark.parametrize(
    ("tunables", "finding", "severity"),
    [
        ({"tcp_timestamps": 0}, "tcp_timestamps", "warning"),
        ({"tcp_window_scaling": 0}, "tcp_window_scaling", "warning"),
        ({"tcp_sack": 0}, "tcp_sack", "warning"),
        ({"tcp_syncookies": 2}, "tcp_syncookies", "info"),
        ({"tcp_tw_reuse": 1, "tcp_timestamps": 0}, "tcp_tw_reuse", "info"),
        ({"tcp_fin_timeout": 15}, "tcp_fin_timeout", "info"),
        ({"tcp_retries2": 5}, "tcp_retries2", "warning"),
        ({"somaxconn": 128}, "somaxconn", "info"),
        ({"tcp_abort_on_overflow": 1}, "tcp_abort_on_overflow", "info"),
    ],
)
def test_unusual_tunables(tunables, finding, severity):
    assert by_id(make(tunables=tunables))[finding].severity == severity


def test_tunable_texts_state_the_facts():
    f = by_id(make(tunables={"tcp_timestamps": 0, "tcp_window_scaling": 0, "tcp_fin_timeout": 15}))
    assert "PAWS" in f["tcp_timestamps"].detail and "tcp_tw_reuse" in f["tcp_timestamps"].detail
    assert "65,535 bytes" in f["tcp_window_scaling"].detail
    assert "does not shorten TIME-WAIT" in f["tcp_fin_timeout"].detail
    assert "tcp_tw_reuse" not in by_id(make(tunables={"tcp_tw_reuse": 1}))  # fine with timestamps


def test_findings_sorted_by_severity():
    r = make(close_waits(F.CLOSE_WAIT_CRITICAL), tunables={"tcp_sack": 0, "somaxconn": 128})
    sev = [f.severity for f in r.findings]
    assert sev == sorted(sev, key=F.SEVERITY_ORDER.get)
    assert sev[0] == "critical" and sev[-1] == "info"


def test_unreadable_processes_reported():
    r = make()
    assert F.visibility(r) == []
    r.unreadable_pids = 3
    assert [f.id for f in F.visibility(r)] == ["owners-incomplete"]
