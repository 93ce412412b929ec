"""`tcpstack trace` as a command: filters, --json, --absolute, --svg/--plot file naming, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcpstack.cli.main import build_parser, main
from tcpstack.pcap import PcapWriter

from .crafted import ACK, FIN, PSH, RST, Conv


@pytest.fixture
def two_conns(tmp_path: Path) -> Path:
    """Connection 1: 198.18.0.1:40000 -> :80, closes normally; 2: 198.18.0.3:40001 -> :8080, RST."""
    a = Conv()
    a.handshake()
    a.c(20, ACK | PSH, 1, 1, data=100)
    a.s(30, ACK, 1, 101)
    a.c(40, ACK | FIN, 101, 1)
    a.s(50, ACK | FIN, 1, 102)
    a.c(60, ACK, 102, 2)
    b = Conv(isn_c=70_000, isn_s=90_000, client=("198.18.0.3", 40001), server=("198.18.0.2", 8080))
    b.handshake(t_ms=5)
    b.c(25, RST | ACK, 1, 1)
    path = tmp_path / "two.pcap"
    with PcapWriter(path) as w:
        for t, p in sorted(a.packets + b.packets, key=lambda x: x[0]):
            w.write(t, p)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["trace", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_listed_in_help() -> None:
    assert "trace" in build_parser().format_help()


def test_text_ladder_for_every_connection(two_conns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, str(two_conns))
    assert rc == 0
    assert "12 IP packets, 12 TCP segments; 2 connections" in out
    assert "connection #1  198.18.0.1:40000 -> 198.18.0.2:80" in out
    assert "connection #2  198.18.0.3:40001 -> 198.18.0.2:8080" in out
    assert "client: CLOSED -> SYN-SENT -> ESTABLISHED -> FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT" in out
    assert "server: LISTEN -> SYN-RECEIVED -> ESTABLISHED -> CLOSE-WAIT -> LAST-ACK -> CLOSED" in out
    assert "client: CLOSED -> SYN-SENT -> ESTABLISHED -> CLOSED" in out
    assert "(connection reset (RST))" in out
    assert "|-- [P.] seq=1 ack=1 win=512 len=0 " not in out
    assert "|-- [P.] seq=1 ack=1 win=512 len=100 " in out
    assert "How to read it" in out


@pytest.mark.parametrize(
    ("args", "indexes"),
    [
        (["--conn", "2"], [2]),
        (["--conn", "1", "--conn", "2"], [1, 2]),
        (["--port", "8080"], [2]),
        (["--port", "40000"], [1]),
        (["--host", "198.18.0.3"], [2]),
        (["--host", "198.18.0.2"], [1, 2]),
        (["--host", "198.18.0.3", "--port", "80"], []),
    ],
)
def test_filters(two_conns: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                 indexes: list[int]) -> None:
    rc, out, err = run(capsys, str(two_conns), "--json", *args)
    doc = json.loads(out)
    assert [c["index"] for c in doc["connections"]] == indexes
    assert rc == (0 if indexes else 1)
    if not indexes:
        assert "no connection matches" in err


def test_list(two_conns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, str(two_conns), "--list")
    assert rc == 0
    assert "#1  198.18.0.1:40000 -> 198.18.0.2:80  8 segments" in out
    assert "#2  198.18.0.3:40001 -> 198.18.0.2:8080  4 segments" in out and "1 rst" in out
    assert "|--" not in out


def test_json_document(two_conns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, str(two_conns), "--json", "--conn", "1")
    doc = json.loads(out)
    assert rc == 0
    assert doc["ip_packets"] == 12 and doc["tcp_segments"] == 12 and doc["skipped"] == {}
    (c,) = doc["connections"]
    assert c["client"] == "198.18.0.1:40000" and c["server"] == "198.18.0.2:80"
    assert c["handshake_seen"] is True and c["rtt_us"] == 10_000
    assert c["state_sequence"]["server"][-1] == "CLOSED"
    assert [s["state"] for s in c["states"]["client"]] == c["state_sequence"]["client"]
    assert c["states"]["client"][-1]["cause"] == "rcv FIN / snd ACK"
    first = c["segments"][0]
    assert (first["frame"], first["from"], first["flags"], first["seq"], first["ack"]) == (1, "client", "S", 0, None)
    assert first["options"] == "mss 1460,wscale 7,eol"  # the builder pads with EOL, as tcpdump shows
    assert first["seq_raw"] == 1000
    assert all("expert" in s for s in c["segments"])


def test_absolute_numbers(two_conns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _rc, out, _ = run(capsys, str(two_conns), "--conn", "1", "--absolute")
    assert "[S] seq=1000 win=64240" in out
    assert "[S.] seq=5000 ack=1001" in out
    _rc, out, _ = run(capsys, str(two_conns), "--conn", "1", "--absolute", "--json")
    assert json.loads(out)["connections"][0]["segments"][1]["ack"] == 1001


def test_long_ladder_is_shortened_unless_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv = Conv()
    cv.handshake()
    for i in range(100):
        cv.c(20 + i, ACK, 1 + 100 * i, 1, data=100)
        cv.s(30 + i, ACK, 1, 101 + 100 * i)
    path = cv.write(tmp_path / "long.pcap")
    _rc, out, _ = run(capsys, str(path))
    assert "rows not shown (use --full)" in out
    _rc, out, _ = run(capsys, str(path), "--full")
    assert "rows not shown" not in out and out.count("|--") == 102


def test_svg_and_plot_files(two_conns: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svg, png = tmp_path / "l.svg", tmp_path / "p.png"
    rc, _out, err = run(capsys, str(two_conns), "--svg", str(svg), "--plot", str(png))
    assert rc == 0
    # Two connections: one file each, numbered.
    for name in ("l-1.svg", "l-2.svg", "p-1.png", "p-2.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
        assert f"wrote {tmp_path / name}" in err
    rc, _out, _err = run(capsys, str(two_conns), "--conn", "2", "--svg", str(svg), "--plot", str(png),
                         "--direction", "server", "--svg-timing", "fixed")
    assert rc == 0 and svg.read_text().startswith("<svg") and png.read_bytes()[:4] == b"\x89PNG"
    assert "fixed slant (--svg-timing fixed)" in svg.read_text()


def test_not_a_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a capture\n")
    with pytest.raises(SystemExit, match="not a pcap or pcapng file"):
        main(["trace", str(bad)])
    with pytest.raises(SystemExit, match="no such file"):
        main(["trace", str(tmp_path / "missing.pcap")])


def test_empty_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.pcap"
    PcapWriter(path).close()
    rc, out, err = run(capsys, str(path))
    assert rc == 1 and "0 connections" in out and "no TCP connection" in err
