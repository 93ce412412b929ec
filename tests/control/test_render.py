"""What ss/stat show of a stack with known sockets (tests/control/lab.py), exactly."""

from __future__ import annotations

import json

import pytest

from tcpstack.cli.ss_cmd import format_ms_timer, info_text, parse_filter, render_table
from tcpstack.cli.stat_cmd import render as render_stat
from tcpstack.runtime.control import ss_records, stat_record
from tcpstack.tcp import State

from .lab import HOP, T0, Lab

TABLE = [
    "State      Recv-Q Send-Q Local Address:Port Peer Address:Port",
    "LISTEN     0      128                *:80              *:*",
    "LISTEN     1      4                  *:7               *:*",
    "SYN-RECV   0      0         198.18.0.2:80     198.18.0.1:40004",
    "ESTAB      5      0         198.18.0.2:80     198.18.0.1:40001",
    "CLOSE-WAIT 0      0         198.18.0.2:80     198.18.0.1:40002",
    "ESTAB      0      0         198.18.0.2:7      198.18.0.1:40005",
    "TIME-WAIT  0      0         198.18.0.2:80     198.18.0.1:40003",
]


def test_lab_time_is_what_the_expected_lines_assume(lab: Lab) -> None:
    assert lab.now == T0 + 22 * HOP


def test_ss_table_lists_every_kind_of_socket(lab: Lab) -> None:
    assert render_table(ss_records(lab.server, lab.now)) == TABLE


def test_ss_table_without_header(lab: Lab) -> None:
    assert render_table(ss_records(lab.server, lab.now), header=False) == TABLE[1:]


def test_ss_timers_as_ss_o_prints_them(lab: Lab) -> None:
    lines = render_table(ss_records(lab.server, lab.now, timers=True), timers=True)
    assert (
        lines[3]
        == "SYN-RECV   0      0         198.18.0.2:80     198.18.0.1:40004 timer:(on,980ms,0)"
    )
    assert (
        lines[7]
        == "TIME-WAIT  0      0         198.18.0.2:80     198.18.0.1:40003 timer:(timewait,59sec,0)"
    )
    # No timer runs on the idle connections (delayed ACKs are not shown, as in Linux).
    assert lines[4] == TABLE[4]


def test_ss_info_line_under_each_connection(lab: Lab) -> None:
    lines = render_table(ss_records(lab.server, lab.now, info=True), info=True)
    i = lines.index(TABLE[4])
    assert lines[i + 1] == (
        "\t ts sack cubic wscale:7,7 rto:200 rtt:10/5 ato:40 mss:1448 rcvmss:1460 cwnd:10 "
        "bytes_received:5 segs_out:1 segs_in:2 data_segs_in:1 minrtt:10 snd_wnd:131072 rcv_wnd:130944"
    )
    # Listeners, requests and TIME-WAIT have no tcp_info line.
    assert lines[1] == TABLE[1] and lines[2] == TABLE[2]
    assert sum(ln.startswith("\t") for ln in lines) == 3


def test_info_text_shows_ssthresh_retrans_and_backoff_when_set() -> None:
    info = {
        "options": ["sack"],
        "congestion_control": "newreno",
        "rto": 408_000,
        "backoff": 1,
        "rtt": 1_234,
        "rttvar": 617,
        "ato": 40_000,
        "snd_mss": 1448,
        "rcv_mss": 536,
        "snd_cwnd": 3,
        "snd_ssthresh": 7,
        "total_retrans": 2,
        "retransmits": 1,
        "unacked": 4344,
        "min_rtt": 1_000,
        "snd_wnd": 65535,
        "rcv_wnd": 64240,
    }
    assert info_text(info) == (
        "sack newreno rto:408 backoff:1 rtt:1.234/0.617 ato:40 mss:1448 rcvmss:536 cwnd:3 "
        "ssthresh:7 unacked:4344 retrans:1/2 minrtt:1 snd_wnd:65535 rcv_wnd:64240"
    )


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, ""),
        (200, "200ms"),
        (1500, "1.500ms"),
        (9999, "9.999ms"),
        (10_500, "10sec"),
        (59_950, "59sec"),
        (90_000, "1min30sec"),
        (7_140_000, "119min"),
        (600_500, "10min"),
    ],
)
def test_format_ms_timer_is_ss_print_ms_timer(ms: int, text: str) -> None:
    assert format_ms_timer(ms) == text


def test_ss_json_records_use_rfc_names(lab: Lab) -> None:
    recs = ss_records(lab.server, lab.now, info=True)
    assert [r["state"] for r in recs] == [
        "LISTEN",
        "LISTEN",
        "SYN-RECEIVED",
        "ESTABLISHED",
        "CLOSE-WAIT",
        "ESTABLISHED",
        "TIME-WAIT",
    ]
    listener7 = recs[1]
    assert listener7 == {
        "kind": "listener",
        "id": listener7["id"],
        "state": "LISTEN",
        "local_addr": "*",
        "local_port": 7,
        "remote_addr": "*",
        "remote_port": 0,
        "recv_q": 1,
        "send_q": 4,
        "syn_queue": 0,
        "accept_queue": 1,
        "backlog": 4,
        "timer": None,
    }
    tw = recs[-1]
    assert tw == {
        "kind": "time-wait",
        "id": tw["id"],
        "state": "TIME-WAIT",
        "local_addr": "198.18.0.2",
        "local_port": 80,
        "remote_addr": "198.18.0.1",
        "remote_port": 40003,
        "recv_q": 0,
        "send_q": 0,
        "timer": {"name": "timewait", "expires_us": 59_970_000, "retrans": 0},
    }
    est = recs[3]
    assert est["kind"] == "connection" and est["recv_q"] == 5 and est["timer"] is None
    assert est["info"]["rtt"] == 10_000 and est["info"]["rto"] == 200_000
    assert est["info"]["snd_cwnd"] == 10 and est["info"]["bytes_received"] == 5
    assert "state" not in est["info"] and "timer" not in est["info"]
    json.dumps(recs)  # plain data all the way down


def test_ss_state_filters(lab: Lab) -> None:
    def ports(**kw):  # type: ignore[no-untyped-def]
        return [
            (r["state"], r["local_port"], r["remote_port"])
            for r in ss_records(lab.server, lab.now, **kw)
        ]

    assert ports(states=["time-wait"]) == [("TIME-WAIT", 80, 40003)]
    assert ports(states=["established"]) == [("ESTABLISHED", 80, 40001), ("ESTABLISHED", 7, 40005)]
    assert ports(states=["listening"]) == [("LISTEN", 80, 0), ("LISTEN", 7, 0)]
    assert ports(states=["syn-recv"]) == [("SYN-RECEIVED", 80, 40004)]
    assert ports(states=["CLOSE_WAIT"]) == [("CLOSE-WAIT", 80, 40002)]
    assert ports(states=["bucket"]) == [("SYN-RECEIVED", 80, 40004), ("TIME-WAIT", 80, 40003)]
    assert [s for s, _, _ in ports(states=["connected"])] == [
        "SYN-RECEIVED",
        "ESTABLISHED",
        "CLOSE-WAIT",
        "ESTABLISHED",
        "TIME-WAIT",
    ]


def test_ss_port_filters(lab: Lab) -> None:
    def ports(cond):  # type: ignore[no-untyped-def]
        return [(r["state"], r["remote_port"]) for r in ss_records(lab.server, lab.now, ports=cond)]

    assert ports([["sport", "==", 7]]) == [("LISTEN", 0), ("ESTABLISHED", 40005)]
    assert ports([["dport", "==", 40001]]) == [("ESTABLISHED", 40001)]
    assert ports([["dport", ">", 40002], ["sport", "==", 80]]) == [
        ("SYN-RECEIVED", 40004),
        ("TIME-WAIT", 40003),
    ]
    assert ports([["port", "==", 40002]]) == [("CLOSE-WAIT", 40002)]
    with pytest.raises(ValueError, match="operator"):
        ss_records(lab.server, lab.now, ports=[["sport", "~", 7]])


def test_parse_filter_speaks_ss() -> None:
    assert parse_filter([]) == (None, [])
    assert parse_filter(["state", "time-wait"]) == (["TIME-WAIT"], [])
    assert parse_filter(["state", "established", "state", "listening"]) == (
        ["ESTABLISHED", "LISTEN"],
        [],
    )
    assert parse_filter(["sport", "=", ":80"]) == (None, [["sport", "==", 80]])
    assert parse_filter(["dport", "ge", ":1024", "and", "sport", ":http"]) == (
        None,
        [["dport", ">=", 1024], ["sport", "==", 80]],
    )
    states, _ = parse_filter(["exclude", "time-wait", "exclude", "listening"])
    assert (
        states is not None
        and "TIME-WAIT" not in states
        and "LISTEN" not in states
        and len(states) == 9
    )
    for bad, msg in (
        (["state", "nonsense"], "unknown state"),
        (["sport", "=", ":x1"], "not a port"),
        (["sport", "=", ":80", "or", "dport", ":80"], "ANDed"),
        (["src", "1.2.3.4"], "address"),
        (["bogus"], "unknown filter word"),
        (["state"], "needs a state"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_filter(bad)


def test_ss_single_state_hides_the_state_column_as_ss_does(lab: Lab) -> None:
    recs = ss_records(lab.server, lab.now, states=["time-wait"])
    assert render_table(recs, show_state=False) == [
        "Recv-Q Send-Q Local Address:Port Peer Address:Port",
        "0      0         198.18.0.2:80     198.18.0.1:40003",
    ]


def test_ss_ipv6_addresses_in_brackets() -> None:
    rec = {
        "state": "ESTABLISHED",
        "recv_q": 0,
        "send_q": 0,
        "local_addr": "fd00:198:18::2",
        "local_port": 80,
        "remote_addr": "fd00:198:18::1",
        "remote_port": 40000,
    }
    assert render_table([rec], header=False) == [
        "ESTAB 0      0      [fd00:198:18::2]:80   [fd00:198:18::1]:40000"
    ]


def test_stat_counts_every_state_and_the_mib(lab: Lab) -> None:
    rec = stat_record(lab.server)
    assert rec["states"] == {
        "CLOSED": 0,
        "LISTEN": 2,
        "SYN-SENT": 0,
        "SYN-RECEIVED": 1,
        "ESTABLISHED": 2,
        "FIN-WAIT-1": 0,
        "FIN-WAIT-2": 0,
        "CLOSE-WAIT": 1,
        "CLOSING": 0,
        "LAST-ACK": 0,
        "TIME-WAIT": 1,
    }
    assert set(rec["states"]) == {s.value for s in State}
    mib = rec["mib"]
    assert (
        mib["TcpPassiveOpens"] == 4
        and mib["TcpCurrEstab"] == 3
        and mib["TcpExtListenOverflows"] == 0
    )
    assert {k for k, v in mib.items() if v} == {
        "TcpPassiveOpens",
        "TcpCurrEstab",
        "TcpInSegs",
        "TcpOutSegs",
    }


def test_stat_text_as_netstat_awk_and_nstat(lab: Lab) -> None:
    rec = stat_record(lab.server)
    mib = rec["mib"]
    assert render_stat(rec) == [
        "ESTABLISHED 2",
        "SYN_RECV 1",
        "TIME_WAIT 1",
        "CLOSE_WAIT 1",
        "LISTEN 2",
        "",
        "#tcpstack",
        f"TcpPassiveOpens                 {mib['TcpPassiveOpens']}",
        f"TcpCurrEstab                    {mib['TcpCurrEstab']}",
        f"TcpInSegs                       {mib['TcpInSegs']}",
        f"TcpOutSegs                      {mib['TcpOutSegs']}",
    ]
    everything = render_stat(rec, all_counters=True)
    assert len(everything) == 11 + 2 + len(mib)
    assert "CLOSE 0" in everything and "TcpExtListenOverflows           0" in everything


def test_stat_rates_column_when_watching(lab: Lab) -> None:
    rec = stat_record(lab.server)
    prev = dict(rec["mib"], TcpInSegs=rec["mib"]["TcpInSegs"] - 4)
    lines = render_stat(rec, prev=prev, interval=2.0)
    assert f"{'TcpInSegs':<32}{rec['mib']['TcpInSegs']:<16}{2.0:6.1f}" in lines
