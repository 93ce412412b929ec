"""ECN through a marking bottleneck (RFC 3168), seeded, asserting numbers."""

from __future__ import annotations

import itertools
from random import Random

import pytest

from tcpstack.sim.link import Link, LinkParams
from tcpstack.sim.transfer import run_transfer
from tcpstack.tcp import Config
from tcpstack.wire.ip import build_ip_tcp, parse_ip, parse_ip_tcp
from tcpstack.wire.tcp import ACK, IP_CE, Segment

RATE = 10_000_000  # 10 Mbit/s, 20 ms RTT: a 25 KB bandwidth-delay product
QUEUE = 100_000
MARK = 20_000


def ecn_config(tcp_ecn: int) -> Config:
    cfg = Config()
    cfg.set("tcp_ecn", tcp_ecn)
    return cfg


def test_a_marking_bottleneck_replaces_drops_with_ce_marks() -> None:
    link = LinkParams(delay_us=10_000, rate_bps=RATE, queue_bytes=QUEUE, ecn_mark_bytes=MARK)
    r = run_transfer(10_000_000, seed=1, link=link, config=ecn_config(1), record=False)
    assert r.completed and r.sent_sha256 == r.received_sha256
    assert "ecn" in r.client_info["options"] and "ecn" in r.server_info["options"]
    # Congestion was signalled by marks alone: nothing dropped, nothing resent.
    assert r.link["dropped_queue"] == 0 and r.retransmits == 0
    assert r.link["ce_marked"] == 297 == r.server_mib["InCEPkts"]  # every mark reached the receiver
    assert r.client_mib["TCPDeliveredCE"] > 0
    # The queue stayed well inside the buffer (slow start's overshoot is the peak) ...
    assert r.link["max_queue_bytes"] == 67_948 < QUEUE
    # ... and the link stayed busy: goodput over 90 % of the rate (headers are the rest).
    assert r.goodput_bps >= 0.90 * RATE, r.goodput_bps


def test_without_ecn_the_same_bottleneck_drops() -> None:
    # The control: tcp_ecn=2 on both sides never negotiates, packets are not ECT,
    # the marker leaves them alone and the queue overflows.
    link = LinkParams(delay_us=10_000, rate_bps=RATE, queue_bytes=QUEUE, ecn_mark_bytes=MARK)
    r = run_transfer(10_000_000, seed=1, link=link, config=ecn_config(2), record=False)
    assert r.completed and r.sent_sha256 == r.received_sha256
    assert "ecn" not in r.client_info["options"]
    assert r.link["ce_marked"] == 0 and r.link["dropped_queue"] > 0 and r.retransmits > 0
    assert r.link["max_queue_bytes"] > 0.99 * QUEUE


def _link(params: LinkParams) -> tuple[Link, list[bytes]]:
    got: list[bytes] = []
    heap: list = []
    return Link("a", "b", params, Random(1), heap, itertools.count(), got.append, lambda: 0), got


@pytest.mark.parametrize(("src", "dst"), [("198.18.0.1", "198.18.0.2"), ("fd00::1", "fd00::2")])
def test_link_marks_only_ect_packets_beyond_the_threshold(src: str, dst: str) -> None:
    link, _ = _link(LinkParams(rate_bps=1_000_000, queue_bytes=10_000, ecn_mark_bytes=1_000))
    heap = link._heap
    seg = Segment(1, 2, 3, 4, ACK, 100, 0, (), b"x" * 500)
    for tos in (0b10, 0b10, 0b10, 0b00, 0b01):  # 540/560 bytes each: the third finds > 1000 ahead
        link.send(build_ip_tcp(src, dst, seg, tos=0xB8 | tos), 0)
    out = [entry[3] for entry in sorted(heap)]
    pkts = [parse_ip(p) for p in out]  # IPv4 header checksums verified
    assert all(p.proto == 6 for p in pkts)
    fields = [(p[1] & 3) if src[0] != "f" else (p[1] >> 4 & 3) for p in out]
    assert fields == [0b10, 0b10, 0b11, 0b00, 0b11] and link.ce_marked == 2
    assert parse_ip_tcp(out[2], ecn=True)[2].flags & IP_CE == IP_CE


def test_ecn_mark_bytes_is_validated() -> None:
    with pytest.raises(ValueError, match="ecn_mark_bytes"):
        LinkParams(ecn_mark_bytes=-1)
