"""`tcpstack doctor --proc DIR` on the snapshot captured from the real kernel
(tests/doctor/data/snapshot, see capture_samples.py and test_doctor_procnet.py)."""

from __future__ import annotations

import io
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tcpstack.cli.doctor_cmd import main
from tcpstack.doctor import SnapshotSource, SourceError, examine
from tcpstack.doctor.procnet import RFC9293_STATES

DATA = Path(__file__).parent / "data" / "snapshot"
PID = 6598


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def report_json():
    code, out, _ = run_cli("--proc", str(DATA), "--json")
    assert code == 0
    return json.loads(out)


def test_states_exact(report_json):
    assert list(report_json["states"]) == list(RFC9293_STATES)
    assert report_json["states"] == {
        "LISTEN": 2,
        "SYN-SENT": 1,
        "SYN-RECEIVED": 1,
        "ESTABLISHED": 8,
        "FIN-WAIT-1": 0,
        "FIN-WAIT-2": 2,
        "CLOSE-WAIT": 2,
        "CLOSING": 0,
        "LAST-ACK": 0,
        "TIME-WAIT": 3,
        "CLOSED": 0,
    }
    assert report_json["states_by_family"]["ipv6"]["CLOSE-WAIT"] == 2
    assert report_json["states_by_family"]["ipv4"]["TIME-WAIT"] == 3
    assert report_json["total_sockets"] == 19
    assert report_json["kernel"] == "6.18.44-fc-v782"


def test_owners_from_snapshot_fd_links(report_json):
    me = {"pid": PID, "command": "tsd-sample"}
    owners = report_json["owners"]
    assert set(owners) == set(RFC9293_STATES)
    assert owners["CLOSE-WAIT"] == [{**me, "count": 2}]
    assert owners["ESTABLISHED"] == [{**me, "count": 7}]
    assert owners["LISTEN"] == [{**me, "count": 2}]
    assert owners["SYN-SENT"] == [{**me, "count": 1}]
    assert owners["TIME-WAIT"] == [] and owners["SYN-RECEIVED"] == [] and owners["FIN-WAIT-2"] == []
    # inode 0: TIME-WAIT, request sock, orphaned FIN-WAIT-2, the connection never accept()ed
    assert report_json["unowned"]["TIME-WAIT"] == 3
    assert report_json["unowned"]["SYN-RECEIVED"] == 1
    assert report_json["unowned"]["FIN-WAIT-2"] == 2
    assert report_json["unowned"]["ESTABLISHED"] == 1
    assert report_json["waiting_accept"] == 1
    assert report_json["owners_complete"] is True


def test_ports(report_json):
    ports = report_json["ports"]
    assert ports["listening"] == [
        {
            "family": "ipv4",
            "address": "0.0.0.0",
            "port": 8080,
            "accept_queue": 1,
            "owners": [{"pid": PID, "command": "tsd-sample"}],
        },
        {
            "family": "ipv6",
            "address": "::",
            "port": 8443,
            "accept_queue": 0,
            "owners": [{"pid": PID, "command": "tsd-sample"}],
        },
    ]
    assert ports["incoming"] == [
        {"port": 8080, "total": 4, "states": {"ESTABLISHED": 3, "SYN-RECEIVED": 1}},
        {"port": 8443, "total": 3, "states": {"FIN-WAIT-2": 2, "ESTABLISHED": 1}},
    ]
    assert ports["outgoing"] == [
        {"port": 8080, "total": 6, "states": {"ESTABLISHED": 3, "TIME-WAIT": 3}},
        {"port": 8443, "total": 3, "states": {"CLOSE-WAIT": 2, "ESTABLISHED": 1}},
        {"port": 9, "total": 1, "states": {"SYN-SENT": 1}},
    ]


def test_queues_and_details(report_json):
    assert report_json["queues"]["ESTABLISHED"] == {
        "recv_q": 3,
        "send_q": 0,
        "sockets_with_data": 1,
    }
    top = report_json["top_queues"][0]
    assert (top["state"], top["local"], top["remote"], top["recv_q"]) == (
        "ESTABLISHED",
        "127.0.0.1:8080",
        "127.0.0.1:53290",
        3,
    )
    assert report_json["orphans"] == {"FIN-WAIT-2": 2}
    assert report_json["close_wait_detail"] == {
        "eof_not_read": 2,
        "data_not_read": 0,
        "unread_bytes": 0,
        "peer_orphans_on_this_host": 2,
    }


def test_counters_and_tunables(report_json):
    c = report_json["counters"]
    assert (c["ActiveOpens"], c["PassiveOpens"], c["OutSegs"], c["RetransSegs"], c["TW"]) == (
        10,
        9,
        44,
        0,
        5,
    )
    for name in (
        "ListenOverflows",
        "ListenDrops",
        "SyncookiesSent",
        "SyncookiesRecv",
        "SyncookiesFailed",
        "TCPTimeWaitOverflow",
        "TCPAbortOnTimeout",
        "TCPAbortOnData",
        "TCPAbortOnClose",
        "TCPAbortOnMemory",
        "TCPSynRetrans",
        "InCsumErrors",
        "EstabResets",
        "TCPBacklogDrop",
        "TCPRcvQDrop",
        "PruneCalled",
        "TCPOFODrop",
    ):
        assert c[name] == 0, name
    t = report_json["tunables"]
    assert t["tcp_syncookies"] == 1 and t["tcp_tw_reuse"] == 2 and t["tcp_fin_timeout"] == 60
    assert t["ip_local_port_range"] == [32768, 60999]
    assert t["somaxconn"] == 4096 and t["tcp_congestion_control"] == "bbr"
    assert t["tcp_tw_recycle"] is None  # gone since Linux 4.12
    assert report_json["counters_delta"] is None


def test_findings(report_json):
    findings = {f["id"]: f for f in report_json["findings"]}
    assert set(findings) == {"close-wait", "time-wait", "orphan-fin-wait-2"}
    for f in report_json["findings"]:
        assert set(f) == {"severity", "id", "title", "detail", "advice"}
        assert f["severity"] in ("info", "warning", "critical")
    cw = findings["close-wait"]
    assert cw["severity"] == "info"
    assert f"pid {PID} (tsd-sample) holds 2" in cw["detail"]
    assert "tcp_fin_timeout" in cw["advice"] and "No sysctl" in cw["advice"]
    tw = findings["time-wait"]
    assert "0 on connections this host accepted, 3 on connections it opened" in tw["detail"]
    assert "4.12" in tw["advice"] and "tcp_tw_reuse=2" in tw["advice"]


def test_human_output_plain_and_rich():
    code, out, _ = run_cli("--proc", str(DATA), "--plain")
    assert code == 0
    assert (
        "tcpstack doctor — snapshot" in out
        and "6.18.44-fc-v782: 19 TCP sockets (13 IPv4, 6 IPv6)" in out
    )
    assert "CLOSE-WAIT    0     2     2      6598/tsd-sample×2" in out
    assert "[INFO] 2 sockets stuck in CLOSE-WAIT" in out
    code, out, _ = run_cli("--proc", str(DATA))
    assert code == 0 and "Sockets by state" in out and "6598/tsd-sample×2" in out


def test_snapshot_byte_order_from_metadata(tmp_path):
    # A snapshot printed by a big-endian host: its addresses read differently.
    shutil.copytree(DATA, tmp_path / "snap", symlinks=True)
    snap = tmp_path / "snap"
    (snap / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: C6120001:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 13957 1 0\n"
    )
    (snap / "net" / "tcp6").write_text("  sl  local_address remote_address st\n")
    meta = json.loads((snap / "doctor-snapshot.json").read_text())
    meta["byteorder"] = "big"
    (snap / "doctor-snapshot.json").write_text(json.dumps(meta))
    report = examine(SnapshotSource(str(snap)))
    assert report.listeners[0]["address"] == "198.18.0.1"
    assert report.listeners[0]["owners"] == [{"pid": PID, "command": "tsd-sample"}]


def test_no_owners_flag(report_json):
    code, out, _ = run_cli("--proc", str(DATA), "--json", "--no-owners")
    data = json.loads(out)
    assert code == 0 and data["owners"]["CLOSE-WAIT"] == [] and data["owners_complete"] is False
    assert data["states"] == report_json["states"]


def test_bad_arguments(tmp_path):
    assert run_cli("--proc", str(tmp_path))[0] == 1  # no net/tcp inside
    code, _, err = run_cli("--proc", str(tmp_path / "nope"))
    assert code == 1 and "not a directory" in err
    assert run_cli("--proc", str(DATA), "--save-proc", str(tmp_path / "x"))[0] == 2
    assert run_cli("--proc", str(DATA), "--interval", "1")[0] == 2
    with pytest.raises(SourceError):
        SnapshotSource(str(tmp_path))


def test_snapshot_fd_links_are_socket_symlinks():
    links = sorted((DATA / str(PID) / "fd").iterdir(), key=lambda p: int(p.name))
    assert len(links) == 12
    assert all(p.is_symlink() and os.readlink(p).startswith("socket:[") for p in links)
    assert (DATA / str(PID) / "comm").read_text() == "tsd-sample\n"
