"""`tcpstack ss`, `stat` and `sysctl` against a stack with known sockets behind a control socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcpstack.cli.main import main
from tcpstack.runtime import control

from .conftest import LoopThread
from .test_render import TABLE


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------- ss
def test_ss_prints_the_table(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, err = run(capsys, "ss", "--control", path)
    assert (rc, err) == (0, "")
    assert out.splitlines() == TABLE


def test_ss_accepts_ss_habits_and_filters(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, _ = run(capsys, "ss", "-tan", "--control", path, "state", "time-wait")
    assert rc == 0
    assert out.splitlines() == [
        "Recv-Q Send-Q Local Address:Port Peer Address:Port",
        "0      0         198.18.0.2:80     198.18.0.1:40003",
    ]
    rc, out, _ = run(capsys, "ss", "--control", path, "-H", "state", "established")
    assert out.splitlines() == [
        "5      0         198.18.0.2:80     198.18.0.1:40001",
        "0      0         198.18.0.2:7      198.18.0.1:40005",
    ]
    rc, out, _ = run(capsys, "ss", "-ltn", "--control", path)
    assert out.splitlines() == [
        "State  Recv-Q Send-Q Local Address:Port Peer Address:Port",
        "LISTEN 0      128                *:80              *:*",
        "LISTEN 1      4                  *:7               *:*",
    ]
    rc, out, _ = run(capsys, "ss", "--control", path, "sport", "=", ":7")
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["LISTEN", "ESTAB"]
    rc, out, _ = run(capsys, "ss", "--control", path, "--port", "40002")
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["CLOSE-WAIT"]
    rc, out, _ = run(
        capsys, "ss", "--control", path, "exclude", "listening", "dport", ">", ":40002"
    )
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["SYN-RECV", "ESTAB", "TIME-WAIT"]


def test_ss_info_and_timers(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, _ = run(capsys, "ss", "-tni", "--control", path, "state", "established")
    lines = out.splitlines()
    assert lines[1] == "5      0         198.18.0.2:80     198.18.0.1:40001"
    # mss is tcpi_snd_mss: the 12 timestamp bytes taken off, as Linux's ss shows it
    assert lines[2].startswith("\t ts sack cubic wscale:7,7 rto:200 rtt:10/5 ato:40 mss:1448 ")
    rc, out, _ = run(capsys, "ss", "-o", "--control", path, "state", "bucket")
    assert out.splitlines()[1:] == [
        "SYN-RECV  0      0         198.18.0.2:80     198.18.0.1:40004 timer:(on,980ms,0)",
        "TIME-WAIT 0      0         198.18.0.2:80     198.18.0.1:40003 timer:(timewait,59sec,0)",
    ]


def test_ss_json_has_rfc_names_and_info(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, _ = run(capsys, "ss", "--json", "--control", path)
    socks = json.loads(out)["sockets"]
    assert [s["state"] for s in socks] == [
        "LISTEN",
        "LISTEN",
        "SYN-RECEIVED",
        "ESTABLISHED",
        "CLOSE-WAIT",
        "ESTABLISHED",
        "TIME-WAIT",
    ]
    assert socks[3]["info"]["rtt"] == 10_000 and socks[6]["timer"]["name"] == "timewait"


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["state", "bogus"], "tcpstack ss: unknown state 'bogus'"),
        (
            ["sport", "=", ":80", "or", "dport", "=", ":80"],
            "tcpstack ss: `or` is not supported: conditions are ANDed",
        ),
    ],
)
def test_ss_bad_filters(served, capsys, argv, msg) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, err = run(capsys, "ss", "--control", path, *argv)
    assert rc == 1 and out == ""
    assert err.startswith(msg) and err.count("\n") == 1


def test_no_control_socket_is_one_clear_line(capsys, sockdir: Path) -> None:  # type: ignore[no-untyped-def]
    for cmd in ("ss", "stat", "sysctl"):
        extra = ["-a"] if cmd == "sysctl" else []
        rc, out, err = run(capsys, cmd, "--control", str(sockdir / "gone.sock"), *extra)
        assert rc == 1 and out == ""
        assert err == (
            f"tcpstack {cmd}: no control socket at {sockdir}/gone.sock (is `tcpstack up` running? "
            "give its --netns or --control)\n"
        )


def test_netns_finds_the_default_path(
    lab, loop_thread: LoopThread, sockdir: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(control, "RUN_DIR", str(sockdir))
    path = control.default_path("tcpstack-x")
    assert path == f"{sockdir}/tcpstack-x.sock"
    srv = loop_thread.serve(lab.server, path, lambda: lab.now)
    try:
        rc, out, _ = run(capsys, "stat", "--netns", "tcpstack-x", "--json")
        assert rc == 0 and json.loads(out)["states"]["ESTABLISHED"] == 2
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)


# ---------------------------------------------------------------------- stat
def test_stat_text_and_json(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, _ = run(capsys, "stat", "--control", path)
    lines = out.splitlines()
    assert lines[:7] == [
        "ESTABLISHED 2",
        "SYN_RECV 1",
        "TIME_WAIT 1",
        "CLOSE_WAIT 1",
        "LISTEN 2",
        "",
        "#tcpstack",
    ]
    assert lines[7].startswith("TcpPassiveOpens                 4")
    rc, out, _ = run(capsys, "stat", "--control", path, "--json")
    doc = json.loads(out)
    assert set(doc) == {"states", "mib"}
    assert len(doc["states"]) == 11 and doc["states"]["CLOSE-WAIT"] == 1
    assert doc["mib"]["TcpExtListenOverflows"] == 0 and doc["mib"]["TcpPassiveOpens"] == 4
    rc, out, _ = run(capsys, "stat", "--control", path, "-a")
    assert (
        "TcpExtTCPChallengeACK           0" in out.splitlines() and "SYN_SENT 0" in out.splitlines()
    )


def test_stat_watch_is_bounded_by_count(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, srv = served
    rc, out, _ = run(capsys, "stat", "--control", path, "--watch", "0.05", "--count", "3")
    assert rc == 0
    blocks = out.split("\n\n#tcpstack\n")
    assert len(blocks) == 4  # three refreshes: states / counters, three times
    counters = [ln for ln in out.splitlines() if ln.startswith("TcpInSegs")]
    assert len(counters) == 3
    assert (
        len(counters[0].split()) == 2 and len(counters[1].split()) == 3
    )  # rates from the second on
    assert counters[1].split()[2] == "0.0"
    rc, out, _ = run(capsys, "stat", "--control", path, "--watch", "0.01", "--count", "2", "--json")
    assert [json.loads(ln)["states"]["LISTEN"] for ln in out.splitlines()] == [2, 2]


# ---------------------------------------------------------------------- sysctl
def test_sysctl_set_and_get(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, err = run(capsys, "sysctl", "--control", path, "net.ipv4.tcp_syncookies=2")
    assert (rc, out, err) == (0, "net.ipv4.tcp_syncookies = 2\n", "")
    assert lab.server.config.tcp_syncookies == 2
    rc, out, _ = run(capsys, "sysctl", "--control", path, "tcp_syncookies", "somaxconn", "tcp_rmem")
    assert (
        out
        == "net.ipv4.tcp_syncookies = 2\nnet.core.somaxconn = 4096\nnet.ipv4.tcp_rmem = 4096\t131072\t6291456\n"
    )
    rc, out, _ = run(capsys, "sysctl", "--control", path, "-n", "tcp_wmem")
    assert out == "4096\t16384\t4194304\n"
    rc, out, _ = run(capsys, "sysctl", "--control", path, "-q", "tcp_fin_timeout=30")
    assert (rc, out) == (0, "") and lab.server.config.tcp_fin_timeout == 30
    rc, out, _ = run(capsys, "sysctl", "--control", path, "--json", "tcp_fin_timeout", "tcp_rmem")
    assert json.loads(out) == {
        "net.ipv4.tcp_fin_timeout": 30,
        "net.ipv4.tcp_rmem": [4096, 131072, 6291456],
    }


def test_sysctl_all(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, _ = run(capsys, "sysctl", "--control", path, "-a")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == len(lab.server.config.names())
    assert (
        "net.ipv4.tcp_syncookies = 1" in lines
        and "net.ipv4.ip_local_port_range = 32768\t60999" in lines
    )


@pytest.mark.parametrize(
    ("arg", "err"),
    [
        (
            "tcp_bogus",
            "tcpstack sysctl: unknown tunable 'tcp_bogus'; see `tcpstack sysctl -a` for the list\n",
        ),
        (
            "net.ipv4.tcp_syncookies=7",
            "tcpstack sysctl: tcp_syncookies must be between 0 and 2, got 7\n",
        ),
        ("tcp_sack=yes", "tcpstack sysctl: tcp_sack takes an integer, got 'yes'\n"),
        ("tcp_rmem=1 2", "tcpstack sysctl: tcp_rmem takes 3 integers, got '1 2'\n"),
    ],
)
def test_sysctl_errors_are_one_line_and_status_1(served, capsys, arg, err) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, got = run(capsys, "sysctl", "--control", path, arg)
    assert (rc, out, got) == (1, "", err)


def test_sysctl_refused_key_explains_why(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, err = run(capsys, "sysctl", "--control", path, "net.ipv4.tcp_tw_recycle=1")
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(
        "tcpstack sysctl: tcp_tw_recycle is refused: tcp_tw_recycle was removed from Linux in 4.12"
    )
    assert "tcp_tw_reuse" in err


def test_sysctl_goes_on_after_an_error_as_sysctl8_does(served, capsys) -> None:  # type: ignore[no-untyped-def]
    lab, path, _ = served
    rc, out, err = run(capsys, "sysctl", "--control", path, "nope", "tcp_sack=0")
    assert (
        rc == 1
        and out == "net.ipv4.tcp_sack = 0\n"
        and err.startswith("tcpstack sysctl: unknown tunable 'nope'")
    )
    assert lab.server.config.tcp_sack == 0


def test_sysctl_without_arguments_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, err = run(capsys, "sysctl")
    assert (
        rc == 2
        and err == "tcpstack sysctl: give KEY, KEY=VALUE or -a (see `tcpstack sysctl --help`)\n"
    )
