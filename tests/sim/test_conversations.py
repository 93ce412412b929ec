"""Whole conversations in the simulator: deterministic, seeded, asserting on numbers."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from tcpstack.cli.main import main
from tcpstack.sim.link import LinkParams
from tcpstack.sim.transfer import run_transfer
from tcpstack.tcp import Config
from tcpstack.tcp import events as ev

CLIENT_ACTIVE = ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSED"]
SERVER_PASSIVE = ["CLOSED", "LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]


def test_client_closes_first_states():
    r = run_transfer(5000, seed=3)
    assert r.completed
    assert r.sent_sha256 == r.received_sha256 and r.received_bytes == 5000
    assert r.client_states == CLIENT_ACTIVE
    assert r.server_states == SERVER_PASSIVE
    assert r.retransmits == 0
    # TIME-WAIT lasts 2*MSL = 60 s after the last FIN.
    assert 60.0 < r.sim_time_s < 60.2


def test_server_closes_first_roles_swap():
    r = run_transfer(5000, seed=3, close_first="server")
    assert r.completed and r.sent_sha256 == r.received_sha256
    assert r.client_states == ["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]
    assert r.server_states == ["CLOSED", "LISTEN", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
                               "FIN-WAIT-2", "TIME-WAIT", "CLOSED"]


def test_simultaneous_close_both_pass_through_closing():
    r = run_transfer(5000, seed=3, close_first="both")
    assert r.completed and r.sent_sha256 == r.received_sha256
    assert r.client_states == ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "CLOSING", "TIME-WAIT", "CLOSED"]
    assert r.server_states == ["CLOSED", "LISTEN", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "CLOSING",
                               "TIME-WAIT", "CLOSED"]


def test_lossy_link_delivers_every_byte():
    link = LinkParams(delay_us=10_000, loss=0.05, dup=0.02, reorder=0.05, corrupt=0.01, corrupt_detectable=True)
    r = run_transfer(1_000_000, seed=7, link=link, record=False)
    assert r.completed
    assert r.received_bytes == 1_000_000
    assert r.sent_sha256 == r.received_sha256
    assert r.retransmits > 0
    # Corrupted packets are caught by the checksum and counted, never delivered.
    assert r.client_mib["InCsumErrors"] + r.server_mib["InCsumErrors"] > 0


def test_same_seed_same_run_different_seed_different_run():
    link = LinkParams(delay_us=5_000, loss=0.02, reorder=0.02)
    a = run_transfer(200_000, seed=11, link=link, record=False)
    b = run_transfer(200_000, seed=11, link=link, record=False)
    c = run_transfer(200_000, seed=12, link=link, record=False)
    assert (a.segments, a.retransmits, a.sim_time_s) == (b.segments, b.retransmits, b.sim_time_s)
    assert (a.segments, a.sim_time_s) != (c.segments, c.sim_time_s)


def test_same_seed_byte_identical_pcap(tmp_path):
    link = LinkParams(delay_us=5_000, loss=0.03)
    digests = []
    for i in range(2):
        path = tmp_path / f"run{i}.pcap"
        run_transfer(100_000, seed=5, link=link, pcap=str(path), record=False)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_events_report_every_segment_and_transition():
    r = run_transfer(3000, seed=2)
    sends = [e for side, e in r.events if e.kind == ev.SEND]
    states = [e for side, e in r.events if e.kind == ev.STATE]
    assert len(sends) == r.segments
    assert [e.detail[1].value for side, e in r.events if side == 0 and e.kind == ev.STATE] == CLIENT_ACTIVE[1:]
    assert all(e.time >= 0 for e in states)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is installed by `make test` (deps-debian)")
def test_tshark_dissects_our_pcap_like_our_trace(tmp_path):
    """An independent dissector reads our pcap: no malformed packets, and the
    flags/seq/ack/len it sees are what our own events say we sent and received."""
    path = tmp_path / "demo.pcap"
    r = run_transfer(20_000, seed=4, link=LinkParams(delay_us=2_000), pcap=str(path))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "tcp.relative_sequence_numbers:FALSE", "-T", "fields",
         "-e", "ip.src", "-e", "tcp.seq", "-e", "tcp.ack", "-e", "tcp.flags", "-e", "tcp.len",
         "-e", "_ws.malformed", "-e", "_ws.expert.message"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip().splitlines()
    seen = []
    for line in out:
        src, seq, ack, flags, length, malformed, expert = (line.split("\t") + [""] * 7)[:7]
        assert not malformed, line
        assert "checksum" not in expert.lower(), line
        seen.append((src, int(seq), int(ack or 0) if int(flags, 16) & 0x10 else 0, int(flags, 16) & 0x1FF, int(length)))
    ours = []
    for side, e in r.events:
        if side == 0 and e.kind in (ev.SEND, ev.RECV):
            s = e.detail
            src = "198.18.0.1" if e.kind == ev.SEND else "198.18.0.2"
            ours.append((src, s.seq, s.ack if s.flags & 0x10 else 0, s.flags, len(s.payload)))
    assert seen == ours
    assert len(seen) > 20


def test_demo_json_cli(capsys):
    assert main(["demo", "--bytes", "4000", "--json", "--seed", "9"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("sent_sha256", "received_sha256", "bytes", "client_states", "server_states",
                "segments", "retransmits", "sim_time_s", "goodput_bps", "client_tcp_info", "server_tcp_info"):
        assert key in d
    assert d["client_states"] == CLIENT_ACTIVE
    assert d["sent_sha256"] == d["received_sha256"]


def test_demo_ladder_cli(capsys):
    assert main(["demo", "--bytes", "100", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "[S]" in text and "[S.]" in text and "[F.]" in text or "[FP.]" in text
    assert "TIME-WAIT" in text and "LAST-ACK" in text


def test_demo_set_unknown_tunable_is_a_clear_error():
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--set", "tcp_nonsense=1"])
    assert "unknown tunable" in str(exc.value)


def test_window_scaling_off_still_works():
    cfg = Config()
    cfg.set("tcp_window_scaling", 0)
    r = run_transfer(300_000, seed=1, config=cfg, record=False)
    assert r.completed and r.sent_sha256 == r.received_sha256
    assert r.client_info["snd_wscale"] == 0


@pytest.mark.parametrize("seed", range(1, 9))
def test_lossy_transfers_across_seeds(seed):
    """A regression net: every seed of a harsh link completes byte-exact
    (once caught a retransmission running past SND.NXT and desynchronising)."""
    link = LinkParams(delay_us=3_000, loss=0.08, dup=0.03, reorder=0.08, corrupt=0.02, corrupt_detectable=True)
    r = run_transfer(150_000 + seed * 7919, seed=seed, link=link, record=False,
                     close_first=("client", "server", "both")[seed % 3])
    assert r.completed, (r.client_states, r.server_states)
    assert r.sent_sha256 == r.received_sha256


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_header_prediction_changes_nothing_on_the_wire(tmp_path, monkeypatch, seed):
    """The fast path must have exactly the full §3.10.7.4 path's effects:
    the same lossy conversation with and without it is byte-identical."""
    import tcpstack.tcp.connection as connection

    link = LinkParams(delay_us=4_000, rate_bps=50_000_000, loss=0.02, reorder=0.02, dup=0.01)
    digests = []
    for fast in (True, False):
        monkeypatch.setattr(connection, "HEADER_PREDICTION", fast)
        path = tmp_path / f"{fast}.pcap"
        r = run_transfer(400_000, seed=seed, link=link, pcap=str(path), record=False)
        assert r.completed and r.sent_sha256 == r.received_sha256
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_checksum_offload_changes_only_the_checksums():
    """With checksum offload the stacks skip per-byte checksum work; the
    conversation (every segment but its checksum field) is the same."""
    link = LinkParams(delay_us=2_000, loss=0.02)
    a = run_transfer(300_000, seed=5, link=link)
    b = run_transfer(300_000, seed=5, link=link, checksum_offload=True)
    assert b.completed and b.sent_sha256 == b.received_sha256
    key = lambda r: [(s, e.time, e.kind, bytes(e.detail.payload) if e.kind == ev.SEND else None)  # noqa: E731
                     for s, e in r.events if e.kind in (ev.SEND, ev.STATE)]
    assert key(a) == key(b)
    with pytest.raises(ValueError, match="corruption"):
        run_transfer(1000, link=LinkParams(corrupt=0.1), checksum_offload=True)


def test_demo_plot_writes_a_time_sequence_and_cwnd_picture(tmp_path, capsys):
    from tcpstack.view.plot import analyse, segments_from_events

    path = tmp_path / "demo.png"
    assert main(["demo", "--bytes", "400000", "--loss", "0.02", "--json", "--plot", str(path)]) == 0
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    # The numbers behind the picture: every data byte is in the time-sequence series.
    r = run_transfer(400_000, seed=1, link=LinkParams(delay_us=10_000, loss=0.02))
    ts = analyse(segments_from_events(r.events), 0)
    assert max(end for _t, _first, end in ts.data) >= 400_000


def test_demo_svg_draws_the_ladder(tmp_path, capsys):
    path = tmp_path / "demo.svg"
    assert main(["demo", "--json", "--svg", str(path)]) == 0
    svg = path.read_text()
    assert svg.startswith("<svg") or svg.startswith("<?xml")
    for text in ("[S]", "[S.]", "SYN-SENT", "TIME-WAIT", "LAST-ACK", "CLOSE-WAIT"):
        assert text in svg
