"""Expert info on crafted conversations, checked by hand and against Wireshark's own analysis.

The crafted capture holds, in one connection, every situation the expert
module names: a loss repaired by fast retransmission after duplicate ACKs
with SACK, a timeout retransmission, a zero window with its probe and the
probe's ACK, a window update, a segment filling the window, a keep-alive and
its ACK, a hole and the out-of-order segment that fills it, and a RST.
tshark (an independent dissector) reads the same file; for every kind its
``tcp.analysis.*`` field must mark exactly the frames we mark.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tcpstack.pcap import PcapWriter, read_packets
from tcpstack.view.expert import Expert, analyze, summary
from tcpstack.view.infer import load

from .crafted import ACK, PSH, RST, Conv, sack

# frame -> kinds we expect (frames are 1-based, as Wireshark numbers them).
EXPECTED = {
    9: {"duplicate-ack"},
    10: {"duplicate-ack"},
    11: {"fast-retransmission"},
    14: {"retransmission"},
    15: {"zero-window"},
    16: {"zero-window-probe"},
    17: {"zero-window", "zero-window-probe-ack"},
    18: {"window-update"},
    19: {"window-full"},  # not a retransmission: a probe's byte does not advance the sequence
    21: {"keep-alive"},
    22: {"keep-alive-ack"},
    23: {"previous-segment-not-captured"},
    24: {"out-of-order"},
    26: {"rst"},
}

# Our kind -> the tshark field that marks it.
TSHARK_FIELDS = {
    "duplicate-ack": "tcp.analysis.duplicate_ack",
    "fast-retransmission": "tcp.analysis.fast_retransmission",
    "spurious-retransmission": "tcp.analysis.spurious_retransmission",
    "out-of-order": "tcp.analysis.out_of_order",
    "previous-segment-not-captured": "tcp.analysis.lost_segment",
    "acked-unseen-segment": "tcp.analysis.ack_lost_segment",
    "zero-window": "tcp.analysis.zero_window",
    "zero-window-probe": "tcp.analysis.zero_window_probe",
    "zero-window-probe-ack": "tcp.analysis.zero_window_probe_ack",
    "window-full": "tcp.analysis.window_full",
    "window-update": "tcp.analysis.window_update",
    "keep-alive": "tcp.analysis.keep_alive",
    "keep-alive-ack": "tcp.analysis.keep_alive_ack",
}


def crafted() -> Conv:
    cv = Conv()
    cv.handshake(0, rtt_ms=10)  # frames 1-3, wscale 7 both ways
    cv.c(20.0, ACK | PSH, 1, 1, data=1000)  # 4
    cv.c(20.1, ACK, 1001, 1, data=1000)  # 5: lost after the capture point
    cv.c(20.2, ACK, 2001, 1, data=1000)  # 6
    cv.c(20.3, ACK | PSH, 3001, 1, data=1000)  # 7
    cv.s(30.0, ACK, 1, 1001)  # 8
    cv.s(30.2, ACK, 1, 1001, options=sack(cv, (2001, 3001)))  # 9: dup ACK #1
    cv.s(30.3, ACK, 1, 1001, options=sack(cv, (2001, 4001)))  # 10: dup ACK #2
    cv.c(30.4, ACK, 1001, 1, data=1000)  # 11: fast retransmission
    cv.s(40.4, ACK, 1, 4001)  # 12
    cv.c(50.0, ACK | PSH, 4001, 1, data=1000)  # 13
    cv.c(400.0, ACK | PSH, 4001, 1, data=1000)  # 14: RTO retransmission
    cv.s(410.0, ACK, 1, 5001, win=0)  # 15: zero window
    cv.c(420.0, ACK, 5001, 1, data=1)  # 16: zero window probe
    cv.s(430.0, ACK, 1, 5001, win=0)  # 17: probe's ACK (still zero)
    cv.s(500.0, ACK, 1, 5001, win=8)  # 18: window update: 8 << 7 = 1024 bytes
    cv.c(501.0, ACK | PSH, 5001, 1, data=1024)  # 19: fills the window exactly
    cv.s(511.0, ACK, 1, 6025)  # 20
    cv.c(2000.0, ACK, 6024, 1)  # 21: keep-alive (SND.NXT - 1, no data)
    cv.s(2010.0, ACK, 1, 6025)  # 22: its ACK
    cv.c(2100.0, ACK, 7025, 1, data=1000)  # 23: the segment before it is not captured
    cv.c(2101.0, ACK, 6025, 1, data=1000)  # 24: ... and arrives just after: out of order
    cv.s(2111.0, ACK, 1, 8025)  # 25
    cv.c(3000.0, RST | ACK, 8025, 1)  # 26
    return cv


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crafted().write(tmp_path_factory.mktemp("expert") / "crafted.pcap")


def ours(path: Path) -> dict[int, set[str]]:
    _cap, conns = load(path)
    assert len(conns) == 1
    return {s.frame: {e.kind for e in s.expert} for s in conns[0].segments if s.expert}


def test_expert_kinds_per_frame(capture: Path) -> None:
    assert ours(capture) == EXPECTED


def test_duplicate_ack_count_and_original_frame(capture: Path) -> None:
    _cap, (conn,) = load(capture)
    texts = {s.frame: [e.text for e in s.expert] for s in conn.segments}
    assert texts[9] == ["dup ACK #1 of frame 8"]
    assert texts[10] == ["dup ACK #2 of frame 8"]
    assert conn.expert_summary()["duplicate-ack"] == 2


def test_expert_in_json_and_ladder(capture: Path) -> None:
    from tcpstack.view.infer import rows_for_connection

    _cap, (conn,) = load(capture)
    d = conn.as_dict()
    by_frame = {s["frame"]: s for s in d["segments"]}
    assert by_frame[15]["expert"] == [
        {"kind": "zero-window", "severity": "warning", "text": "zero window"}
    ]
    assert d["expert_summary"]["retransmission"] == 1
    notes = [r.text for r in rows_for_connection(conn) if r.kind == "note"]
    assert "dup ACK #2 of frame 8" in notes
    assert "fast retransmission" in notes


def wireshark(path: Path) -> dict[int, set[str]]:
    """Frame -> our kinds, as tshark's tcp.analysis fields mark them."""
    fields = sorted(set(TSHARK_FIELDS.values()))
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|",
           "-e", "frame.number", "-e", "tcp.flags.reset", "-e", "tcp.analysis.retransmission"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    theirs: dict[int, set[str]] = {}
    by_field = {v: k for k, v in TSHARK_FIELDS.items()}
    for line in out.splitlines():
        cols = line.split("|")
        frame, rst, retrans, rest = int(cols[0]), cols[1], cols[2], cols[3:]
        kinds = {by_field[f] for f, v in zip(fields, rest, strict=True) if v}
        if rst in ("1", "True"):
            kinds.add("rst")
        # Wireshark marks fast and spurious retransmissions as retransmissions
        # too; we name only the specific kind.
        if retrans and not kinds & {"fast-retransmission", "spurious-retransmission",
                                    "out-of-order"}:
            kinds.add("retransmission")
        if kinds:
            theirs[frame] = kinds
    return theirs


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None,
                                  reason="tshark not installed (make deps-debian)")


@needs_tshark
def test_expert_matches_wireshark(capture: Path) -> None:
    assert ours(capture) == wireshark(capture)


@needs_tshark
def test_expert_matches_wireshark_on_a_lossy_simulated_transfer(tmp_path: Path) -> None:
    """tcpstack's own capture of a lossy bulk transfer (the simulator, client side)."""
    from tcpstack.sim.link import LinkParams
    from tcpstack.sim.transfer import run_transfer

    sim = tmp_path / "sim.pcap"
    run_transfer(300_000, seed=5, link=LinkParams(delay_us=10_000, rate_bps=10_000_000, loss=0.02),
                 pcap=str(sim), record=False)
    # Simulated time starts at 0 s since the epoch, and Wireshark takes a SYN
    # at time 0 for "no SYN seen" (it then has no initial RTT and judges
    # out-of-order against 3 ms): move the capture to a real date.
    path = tmp_path / "bulk.pcap"
    with PcapWriter(path) as w:
        for t, pkt in read_packets(sim):
            w.write(t + 1_700_000_000_000_000, pkt)
    mine = ours(path)
    assert mine == wireshark(path)
    kinds = set().union(*mine.values())
    assert {"duplicate-ack", "fast-retransmission"} <= kinds


def test_analyze_takes_neutral_tuples() -> None:
    from tcpstack.wire.tcp import Segment

    segs = [
        (0, 0, Segment(1, 2, 100, 0, 0x02, 1000)),
        (10, 1, Segment(2, 1, 900, 101, 0x12, 1000)),
        (20, 0, Segment(1, 2, 101, 901, 0x10, 1000)),
        (30, 0, Segment(1, 2, 101, 901, 0x18, 1000, payload=b"x" * 10)),
        (40, 0, Segment(1, 2, 101, 901, 0x18, 1000, payload=b"x" * 10)),
    ]
    notes = analyze(segs)
    assert notes[4] == (Expert("retransmission", "retransmission"),)
    assert summary(notes) == {"retransmission": 1}
    with pytest.raises(ValueError):
        analyze([(0, 2, segs[0][2])])
