"""The simulator's network on its own: numbers, not impressions.

The endpoints here are small but real implementations of the sans-I/O
endpoint protocol (a sink that records, a reflector that answers, a source
that emits on a schedule, a timer that asks to be woken) — the network is
tested against the protocol, not against mocks of tcpstack's engine.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct

import pytest

from tcpstack.pcap import read_packets
from tcpstack.sim import (
    DEFAULT_QUEUE_PACKETS,
    Link,
    LinkParams,
    Network,
    parse_rate,
    serialization_us,
)

A4, B4, C4 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
A6, B6 = "2001:db8::1", "2001:db8::2"


def ip4(src: str, dst: str, size: int = 100, seq: int = 0) -> bytes:
    """An IPv4 packet of ``size`` bytes; ``seq`` in the payload tells packets apart."""
    assert size >= 24
    src_b = bytes(int(x) for x in src.split("."))
    dst_b = bytes(int(x) for x in dst.split("."))
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 253, 0, src_b, dst_b)
    return header + struct.pack("!I", seq) + bytes(size - 24)


def ip6(src: str, dst: str, size: int = 100, seq: int = 0) -> bytes:
    import ipaddress

    header = struct.pack("!IHBB", 6 << 28, size - 40, 253, 64)
    header += ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    return header + struct.pack("!I", seq) + bytes(size - 44)


def seq_of(packet: bytes) -> int:
    off = 20 if packet[0] >> 4 == 4 else 40
    return struct.unpack_from("!I", packet, off)[0]


class Sink:
    """Records (time, packet) of everything it receives; never sends."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    def receive(self, packet: bytes, now: int) -> None:
        self.got.append((now, packet))

    def poll(self, now: int) -> None:
        pass

    def next_deadline(self) -> int | None:
        return None

    def transmit(self) -> list[bytes]:
        return []


class Source(Sink):
    """Emits ``packets`` at the given times (all at once at time ``at``)."""

    def __init__(self, schedule: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self.schedule = sorted(schedule, key=lambda x: x[0])
        self.out: list[bytes] = []
        self.polls: list[int] = []

    def poll(self, now: int) -> None:
        self.polls.append(now)
        while self.schedule and self.schedule[0][0] <= now:
            self.out.append(self.schedule.pop(0)[1])

    def next_deadline(self) -> int | None:
        return self.schedule[0][0] if self.schedule else None

    def transmit(self) -> list[bytes]:
        out, self.out = self.out, []
        return out


class Reflector(Sink):
    """Echoes every packet back with source and destination addresses swapped."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []

    def receive(self, packet: bytes, now: int) -> None:
        super().receive(packet, now)
        if packet[0] >> 4 == 4:
            self.out.append(packet[:12] + packet[16:20] + packet[12:16] + packet[20:])
        else:
            self.out.append(packet[:8] + packet[24:40] + packet[8:24] + packet[40:])

    def transmit(self) -> list[bytes]:
        out, self.out = self.out, []
        return out


class Alarm(Sink):
    """Asks to be woken at each time in ``deadlines``; records when it was polled."""

    def __init__(self, deadlines: list[int]) -> None:
        super().__init__()
        self.deadlines = sorted(deadlines)
        self.polls: list[int] = []

    def poll(self, now: int) -> None:
        self.polls.append(now)
        while self.deadlines and self.deadlines[0] <= now:
            self.deadlines.pop(0)

    def next_deadline(self) -> int | None:
        return self.deadlines[0] if self.deadlines else None


def pair(params: LinkParams, seed: int = 0, n: int = 0, size: int = 100):
    """a --params--> b; a sends n packets at time 0."""
    net = Network(seed=seed)
    src = Source([(0, ip4(A4, B4, size, i)) for i in range(n)])
    sink = Sink()
    net.add_host("a", src, [A4])
    net.add_host("b", sink, [B4])
    net.connect("a", "b", params)
    return net, src, sink


def binomial_ok(k: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# --------------------------------------------------------------- parse_rate


@pytest.mark.parametrize(
    "text,bps",
    [
        ("10mbit", 10_000_000),
        ("10Mbit", 10_000_000),
        ("1gbit", 1_000_000_000),
        ("500kbit", 500_000),
        ("1tbit", 10**12),
        ("1200", 1200),
        ("1200bit", 1200),
        ("1.5mbit", 1_500_000),
        ("1kibit", 1024),
        ("2mibit", 2 * 1024**2),
        ("1gibit", 1024**3),
        ("100bps", 800),
        ("125kbps", 1_000_000),
        ("1mbps", 8_000_000),
        ("1kibps", 8192),
        ("1e6bit", 1_000_000),
        (" 10 mbit ", 10_000_000),
        (64000, 64000),
    ],
)
def test_parse_rate_tc_units(text, bps):
    assert parse_rate(text) == bps


@pytest.mark.parametrize(
    "text",
    ["", "fast", "10 megabits", "mbit", "-5mbit", "0", "0.1bit", "10mbitx", "1..5mbit", 0, -1],
)
def test_parse_rate_rejects_nonsense(text):
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(text)


def test_link_params_validate_and_parse():
    p = LinkParams(rate_bps="10mbit", delay_us=5000)
    assert p.rate_bps == 10_000_000
    assert p.queue_bytes == DEFAULT_QUEUE_PACKETS * 1500
    assert p.reorder_delay_us == 5000
    assert LinkParams().reorder_delay_us == 1000
    for bad in (
        {"loss": 1.5},
        {"dup": -0.1},
        {"delay_us": -1},
        {"jitter_us": 1.5},
        {"queue_bytes": 0},
        {"rate_bps": "warp9"},
    ):
        with pytest.raises(ValueError):
            LinkParams(**bad)


# ---------------------------------------------------------- delay and rate


def test_delay_packet_arrives_exactly_after_delay():
    net, _, sink = pair(LinkParams(delay_us=10_000), n=1)
    net.run()
    assert [t for t, _ in sink.got] == [10_000]
    assert net.now == 10_000


def test_delay_plus_serialization():
    # 1000 bytes at 1 Mbit/s = 8000 µs on the wire, then 10 ms of propagation.
    net, _, sink = pair(LinkParams(delay_us=10_000, rate_bps="1mbit"), n=1, size=1000)
    net.run()
    assert [t for t, _ in sink.got] == [18_000]
    assert serialization_us(1000, 1_000_000) == 8000


def test_bandwidth_n_packets_take_n_s_8_over_rate():
    n, size, rate = 100, 1250, 10_000_000  # 1000 µs each
    net, _, sink = pair(LinkParams(delay_us=2000, rate_bps=rate), n=n, size=size)
    net.run()
    times = [t for t, _ in sink.got]
    assert len(times) == n
    assert times[-1] == n * size * 8 * 1_000_000 // rate + 2000 == 102_000
    assert {b - a for a, b in zip(times, times[1:], strict=False)} == {1000}
    assert [seq_of(p) for _, p in sink.got] == list(range(n))


def test_rate_rounding_does_not_accumulate():
    # 100 bytes at 3 Mbit/s is 266.67 µs: rounding per packet would drift by
    # 0.33 µs each; the link rounds once, so 300 packets end at exactly 80 ms.
    net, _, sink = pair(LinkParams(rate_bps=3_000_000), n=300, size=100)
    net.run()
    assert sink.got[-1][0] == 80_000
    assert sink.got[0][0] == 267


def test_idle_link_does_not_bank_credit():
    # A packet sent after the link went idle starts serializing when sent.
    net = Network()
    src = Source([(0, ip4(A4, B4, 1000, 0)), (50_000, ip4(A4, B4, 1000, 1))])
    sink = Sink()
    net.add_host("a", src, [A4])
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(rate_bps="1mbit"))
    net.run()
    assert [t for t, _ in sink.got] == [8000, 58_000]


def test_queue_tail_drop_counts_exactly():
    # 200 packets of 1500 bytes at once into a 100-packet queue: the first 100
    # fit (the one on the wire counts), the other 100 are tail-dropped.
    net, _, sink = pair(LinkParams(rate_bps="10mbit"), n=200, size=1500)
    drops: list[int] = []
    net.on_packet(lambda t, link, p, ev: drops.append(seq_of(p)) if ev == "drop-queue" else None)
    net.run()
    link = net.link("a", "b")
    assert link.dropped_queue == 100
    assert drops == list(range(100, 200))
    assert link.packets_delivered == len(sink.got) == 100
    assert [seq_of(p) for _, p in sink.got] == list(range(100))
    assert link.max_queue_bytes == 150_000
    assert link.counters()["packets_sent"] == 200


def test_queue_drains_so_paced_traffic_is_not_dropped():
    # 1500 bytes every 1200 µs at 10 Mbit/s (1200 µs per packet): never queues.
    sched = [(i * 1200, ip4(A4, B4, 1500, i)) for i in range(500)]
    net = Network()
    net.add_host("a", Source(sched), [A4])
    sink = Sink()
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(rate_bps="10mbit", queue_bytes=1500))
    net.run()
    link = net.link("a", "b")
    assert link.dropped_queue == 0 and len(sink.got) == 500
    assert link.max_queue_bytes == 1500
    assert link.queue_bytes_at(net.now) == 0


# ------------------------------------------------------------- impairments


def test_loss_rate_binomial_and_exact_for_seed():
    n = 10_000
    net, _, sink = pair(LinkParams(loss=0.1), seed=7, n=n)
    net.run()
    link = net.link("a", "b")
    assert link.dropped_loss + len(sink.got) == n
    assert binomial_ok(link.dropped_loss, n, 0.1)
    # Deterministic: this seed, this count — one draw per packet from Random(seed).
    import random

    rng = random.Random(7)
    assert link.dropped_loss == sum(rng.random() < 0.1 for _ in range(n)) == 983
    # The same seed gives the very same losses.
    net2, _, sink2 = pair(LinkParams(loss=0.1), seed=7, n=n)
    net2.run()
    assert [seq_of(p) for _, p in sink2.got] == [seq_of(p) for _, p in sink.got]


def test_loss_zero_and_one():
    net, _, sink = pair(LinkParams(loss=1.0), n=50)
    net.run()
    assert sink.got == [] and net.link("a", "b").dropped_loss == 50
    net, _, sink = pair(LinkParams(loss=0.0), n=50)
    net.run()
    assert len(sink.got) == 50


def test_duplication_delivers_twice():
    n = 5000
    net, _, sink = pair(LinkParams(dup=0.2, delay_us=100), seed=3, n=n)
    dups: list[int] = []
    net.on_packet(lambda t, link, p, ev: dups.append(seq_of(p)) if ev == "dup" else None)
    net.run()
    link = net.link("a", "b")
    assert len(sink.got) == n + link.duplicated == link.packets_delivered
    assert binomial_ok(link.duplicated, n, 0.2)
    seqs = [seq_of(p) for _, p in sink.got]
    # Each duplicate arrives right behind its original, byte-identical.
    for s in dups:
        i = seqs.index(s)
        assert seqs[i + 1] == s and sink.got[i][1] == sink.got[i + 1][1]
    assert sorted(set(seqs)) == list(range(n))


def test_duplicate_uses_the_wire_too():
    net, _, sink = pair(LinkParams(dup=1.0, rate_bps="1mbit"), n=1, size=1000)
    net.run()
    assert [t for t, _ in sink.got] == [8000, 16_000]


def test_reordering_reorders_and_loses_nothing():
    n = 2000
    sched = [(i * 100, ip4(A4, B4, 100, i)) for i in range(n)]
    net = Network(seed=11)
    net.add_host("a", Source(sched), [A4])
    sink = Sink()
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(delay_us=1000, reorder=0.05, reorder_delay_us=1000))
    net.run()
    link = net.link("a", "b")
    seqs = [seq_of(p) for _, p in sink.got]
    assert sorted(seqs) == list(range(n))
    inversions = sum(1 for x, y in zip(seqs, seqs[1:], strict=False) if y < x)
    assert link.reordered > 0 and inversions == link.reordered
    assert binomial_ok(link.reordered, n, 0.05)
    # A held packet arrives reorder_delay_us late; the others exactly on time.
    for t, p in sink.got:
        assert t - seq_of(p) * 100 in (1000, 2000)


def test_jitter_without_reorder_keeps_fifo():
    n = 3000
    sched = [(i * 10, ip4(A4, B4, 100, i)) for i in range(n)]
    net = Network(seed=5)
    net.add_host("a", Source(sched), [A4])
    sink = Sink()
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(delay_us=1000, jitter_us=5000))
    net.run()
    seqs = [seq_of(p) for _, p in sink.got]
    assert seqs == list(range(n))
    times = [t for t, _ in sink.got]
    assert times == sorted(times)
    assert all(1000 <= t - seq_of(p) * 10 for t, p in sink.got)
    assert max(t - seq_of(p) * 10 for t, p in sink.got) > 5000  # jitter did apply


def test_corruption_flips_one_to_three_bits():
    n = 500
    net, _, sink = pair(LinkParams(corrupt=1.0), seed=9, n=n, size=200)
    seen: list[bytes] = []
    net.on_packet(lambda t, link, p, ev: seen.append(p) if ev == "corrupt" else None)
    net.run()
    assert net.link("a", "b").corrupted == n == len(sink.got)
    flips = []
    for (_, got), sent in zip(sink.got, [ip4(A4, B4, 200, i) for i in range(n)], strict=True):
        d = int.from_bytes(got, "big") ^ int.from_bytes(sent, "big")
        flips.append(d.bit_count())
    assert set(flips) == {1, 2, 3}
    assert seen == [p for _, p in sink.got]


def test_corruption_rate_partial():
    n = 4000
    net, _, sink = pair(LinkParams(corrupt=0.25), seed=2, n=n)
    net.run()
    # Nothing is lost or reordered, so the i-th arrival is packet i.
    bad = sum(1 for i, (_, p) in enumerate(sink.got) if p != ip4(A4, B4, 100, i))
    link = net.link("a", "b")
    assert bad == link.corrupted
    assert binomial_ok(link.corrupted, n, 0.25)


def test_observer_sees_every_event_kind_and_can_unsubscribe():
    events: list[str] = []
    net, _, _ = pair(
        LinkParams(loss=0.2, dup=0.2, corrupt=0.2, reorder=0.2, rate_bps="1mbit", queue_bytes=3000),
        seed=1,
        n=200,
    )
    off = net.on_packet(lambda t, link, p, ev: events.append(ev))
    net.run()
    link = net.link("a", "b")
    c = link.counters()
    assert events.count("send") == c["packets_sent"] == 200
    assert events.count("deliver") == c["packets_delivered"]
    assert events.count("drop-loss") == c["dropped_loss"] > 0
    assert events.count("drop-queue") == c["dropped_queue"] > 0
    assert events.count("dup") == c["duplicated"] > 0
    assert events.count("corrupt") == c["corrupted"] > 0
    assert events.count("reorder") == c["reordered"] > 0
    sent_copies = c["packets_sent"] - c["dropped_loss"] + c["duplicated"]
    assert c["packets_delivered"] == sent_copies - c["dropped_queue"]
    off()
    before = len(events)
    net.node("a").endpoint.schedule.append((net.now + 1, ip4(A4, B4)))  # type: ignore[attr-defined]
    net.run()
    assert len(events) == before


# ------------------------------------------------------------ determinism


def _impaired_run(tmp_path, seed: int, name: str) -> str:
    path = tmp_path / name
    net = Network(seed=seed)
    sched = [(i * 300, ip4(A4, B4, 60 + i % 1400, i)) for i in range(3000)]
    net.add_host("a", Source(sched), [A4])
    net.add_host("b", Reflector(), [B4])
    params = LinkParams(
        delay_us=5000,
        jitter_us=2000,
        rate_bps="20mbit",
        queue_bytes=20_000,
        loss=0.03,
        dup=0.02,
        reorder=0.03,
        corrupt=0.01,
    )
    net.connect("a", "b", params)
    with net.pcap(path, node="a"):
        net.run()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_pcap_bytes_different_seed_differs(tmp_path):
    h1 = _impaired_run(tmp_path, 42, "one.pcap")
    h2 = _impaired_run(tmp_path, 42, "two.pcap")
    h3 = _impaired_run(tmp_path, 43, "three.pcap")
    assert h1 == h2
    assert h1 != h3


def test_pcap_captures_sends_and_receives_at_node(tmp_path):
    net = Network()
    net.add_host("a", Source([(0, ip4(A4, B4, 100, 1)), (10, ip4(A4, B4, 100, 2))]), [A4])
    net.add_host("b", Reflector(), [B4])
    net.connect("a", "b", LinkParams(delay_us=1000))
    with net.pcap(tmp_path / "a.pcap", node="a"), net.pcap(tmp_path / "b.pcap", node="b"):
        net.run()
    a = list(read_packets(tmp_path / "a.pcap"))
    b = list(read_packets(tmp_path / "b.pcap"))
    assert [(t, seq_of(p)) for t, p in a] == [(0, 1), (10, 2), (2000, 1), (2010, 2)]
    assert [(t, seq_of(p)) for t, p in b] == [(1000, 1), (1000, 1), (1010, 2), (1010, 2)]
    # At a, the echo has the addresses swapped.
    assert a[2][1][12:16] == bytes([198, 18, 0, 2])


def test_capture_on_link_records_after_impairment():
    class Rec:
        def __init__(self) -> None:
            self.rows: list[tuple[int, bytes]] = []

        def write(self, ts: int, p: bytes) -> None:
            self.rows.append((ts, p))

    rec = Rec()
    net, _, sink = pair(LinkParams(delay_us=10, corrupt=1.0, loss=0.5), seed=4, n=100)
    cap = net.capture(net.link("a", "b"), rec)
    net.run()
    cap.close()
    assert rec.rows == sink.got
    assert 0 < len(rec.rows) < 100


# ----------------------------------------------------------------- routing


def test_reflector_round_trip_time():
    net = Network()
    net.add_host("a", Source([(0, ip4(A4, B4, 100, 7))]), [A4])
    net.add_host("b", Reflector(), [B4])
    net.connect("a", "b", LinkParams(delay_us=3000), LinkParams(delay_us=5000))
    net.run()
    got = net.endpoint("a").got  # type: ignore[attr-defined]
    assert [(t, seq_of(p)) for t, p in got] == [(8000, 7)]
    assert got[0][1][12:16] == bytes([198, 18, 0, 2])


def test_routing_through_routers_takes_shortest_path():
    # a - r1 - b directly, and a longer detour r1 - r2 - r3 - b.
    net = Network()
    net.add_host("a", Source([(0, ip4(A4, B4, 100, 1)), (0, ip6(A6, B6, 100, 2))]), [A4, A6])
    sink = Reflector()
    net.add_host("b", sink, [B4, B6])
    for r in ("r1", "r2", "r3"):
        net.add_router(r)
    d = LinkParams(delay_us=1000)
    net.connect("a", "r1", d)
    net.connect("r1", "r2", d)
    net.connect("r2", "r3", d)
    net.connect("r3", "b", d)
    net.connect("r1", "b", LinkParams(delay_us=7000))  # fewer hops, though slower
    assert net.route("a", B4) == ["a", "r1", "b"]
    assert net.route("b", A6) == ["b", "r1", "a"]
    net.run()
    assert [(t, seq_of(p)) for t, p in sink.got] == [(8000, 1), (8000, 2)]
    assert net.link("r1", "r2").packets_sent == 0
    assert net.link("r1", "b").packets_delivered == 2
    a = net.endpoint("a")
    assert [(t, seq_of(p)) for t, p in a.got] == [(16_000, 1), (16_000, 2)]  # type: ignore[attr-defined]
    assert net.unroutable == 0


def test_hosts_do_not_forward():
    # a - b - c with b a host: c is unreachable from a.
    net = Network()
    net.add_host("a", Source([(0, ip4(A4, C4))]), [A4])
    net.add_host("b", Sink(), [B4])
    sink_c = Sink()
    net.add_host("c", sink_c, [C4])
    net.connect("a", "b")
    net.connect("b", "c")
    net.run()
    assert sink_c.got == [] and net.unroutable == 1 and net.node("a").unroutable == 1
    with pytest.raises(KeyError):
        net.route("a", C4)


def test_unknown_or_garbage_destination_is_unroutable():
    net = Network()
    net.add_host("a", Source([(0, ip4(A4, "203.0.113.9")), (0, b"\x45" * 10), (0, b"")]), [A4])
    net.add_router("r")
    net.add_host("b", Sink(), [B4])
    net.connect("a", "r")
    net.connect("r", "b")
    net.run()
    assert net.unroutable == 3


def test_corrupted_destination_dropped_at_router():
    # Corrupt every packet on a->r: those whose destination or version bits
    # flipped die at r as unroutable; the rest reach b.
    n = 3000
    net = Network(seed=8)
    net.add_host("a", Source([(0, ip4(A4, B4, 40, i)) for i in range(n)]), [A4])
    net.add_router("r")
    sink = Sink()
    net.add_host("b", sink, [B4])
    net.connect("a", "r", LinkParams(corrupt=1.0))
    net.connect("r", "b")
    net.run()
    assert net.unroutable > 0
    assert net.node("r").unroutable == net.unroutable
    assert len(sink.got) + net.unroutable == n
    for _, p in sink.got:
        assert p[16:20] == bytes([198, 18, 0, 2])


def test_loopback_delivers_to_self():
    net = Network()
    sink = Reflector()
    net.add_host("a", Source([(5, ip4(A4, A4, 100, 3))]), [A4])
    net.run()
    got = net.endpoint("a").got  # type: ignore[attr-defined]
    assert [(t, seq_of(p)) for t, p in got] == [(5, 3)]
    del sink


def test_topology_errors():
    net = Network()
    net.add_host("a", Sink(), [A4])
    with pytest.raises(ValueError, match="already exists"):
        net.add_router("a")
    with pytest.raises(ValueError, match="already used"):
        net.add_host("b", Sink(), [A4])
    with pytest.raises(ValueError, match="not an IPv4 or IPv6"):
        net.add_host("c", Sink(), ["999.1.1.1"])
    with pytest.raises(KeyError):
        net.connect("a", "nowhere")
    with pytest.raises(ValueError):
        net.connect("a", "a")
    with pytest.raises(KeyError):
        net.link("a", "b")


def test_injector_floods_and_receives_replies():
    net = Network()
    inj = net.add_injector("attacker", [C4])
    refl = Reflector()
    net.add_host("b", refl, [B4])
    net.add_router("r")
    net.connect("attacker", "r", LinkParams(delay_us=100))
    net.connect("r", "b", LinkParams(delay_us=100))
    replies: list[tuple[int, int]] = []
    inj.on_receive = lambda now, p: replies.append((now, seq_of(p)))
    inj.send(ip4(C4, B4, 100, 0))  # now
    for i in range(1, 100):
        inj.send(ip4(C4, B4, 100, i), at=i * 10)
    # Spoofed sources: the replies go nowhere.
    inj.send(ip4("198.18.9.9", B4, 100, 1000), at=5000)
    with pytest.raises(ValueError):
        inj.send(ip4(C4, B4), at=-1)
    net.run()
    assert len(refl.got) == 101
    assert refl.got[0][0] == 200 and refl.got[99][0] == 990 + 200
    assert inj.received == 100 and replies[0] == (400, 0)
    assert net.unroutable == 1


# ------------------------------------------------------------- event loop


def test_run_until_stops_exactly_at_until():
    net, _, sink = pair(LinkParams(delay_us=10_000), n=1)
    net.run(until=9_999)
    assert net.now == 9_999 and sink.got == []
    assert net.next_event_time() == 10_000
    net.run(until=10_000)  # an event exactly at `until` runs
    assert net.now == 10_000 and len(sink.got) == 1
    net.run(until=50_000)  # nothing left: the clock still ends at until
    assert net.now == 50_000
    with pytest.raises(ValueError):
        net.run(until=1)


def test_endpoint_timers_fire_at_their_deadline():
    alarm = Alarm([1000, 2500, 2500, 7000])
    net = Network()
    net.add_host("a", alarm, [A4])
    net.run()
    assert alarm.polls == [1000, 2500, 7000]
    assert net.now == 7000


def test_earlier_deadline_preempts_and_stale_wake_is_ignored():
    alarm = Alarm([10_000])
    net = Network()
    net.add_host("a", alarm, [A4])
    net.call_at(100, lambda: alarm.deadlines.insert(0, 500))
    net.run()
    # Polled at 500 and 10000 only: the wake-up first scheduled for 10000 was
    # kept in the heap, and the one rescheduled after 500 fired once.
    assert alarm.polls == [500, 10_000]


def test_past_deadline_is_polled_now():
    alarm = Alarm([0])
    net = Network()
    net.call_at(300, lambda: alarm.deadlines.append(100))
    net.add_host("a", alarm, [A4])
    net.run()
    assert alarm.polls == [0, 300]


def test_call_at_same_time_runs_in_order_and_services_hosts():
    net = Network()
    src = Source([])
    sink = Sink()
    net.add_host("a", src, [A4])
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(delay_us=50))
    order: list[str] = []
    net.call_at(1000, lambda: order.append("first"))
    net.call_at(1000, lambda: (order.append("second"), src.out.append(ip4(A4, B4))))
    net.call_later(10, lambda: order.append("early"))
    net.run()
    assert order == ["early", "first", "second"]
    assert [t for t, _ in sink.got] == [1050]
    with pytest.raises(ValueError):
        net.call_at(5, lambda: None)
    with pytest.raises(ValueError):
        net.call_later(-1, lambda: None)


def test_stop_when_and_max_events():
    net, _, sink = pair(LinkParams(rate_bps="1mbit"), n=10, size=125)  # 1000 µs apart
    net.run(stop_when=lambda: len(sink.got) == 3)
    assert len(sink.got) == 3 and net.now == 3000
    net.run(max_events=2)
    assert len(sink.got) == 5 and net.now == 5000
    net.run(until=100_000, max_events=100)
    assert len(sink.got) == 10 and net.now == 100_000
    assert net.events == 11  # ten deliveries and the source's wake-up at 0


def test_max_events_bounds_an_endless_endpoint():
    class Needy(Sink):
        def next_deadline(self) -> int | None:
            return 0  # always overdue: would spin forever

    net = Network()
    net.add_host("a", Needy(), [A4])
    net.run(max_events=1000)
    assert net.events == 1000 and net.now == 0


def test_step_processes_one_event():
    net, _, sink = pair(LinkParams(delay_us=10), n=2)
    assert net.step() is True  # a's initial wake-up at 0
    steps = 1
    while net.step():
        steps += 1
    assert len(sink.got) == 2 and net.now == 10 and steps == 3
    assert net.step() is False


def test_link_standalone_on_a_bare_heap():
    import heapq
    import itertools
    import random

    heap: list = []
    got: list[bytes] = []
    link = Link(
        "x",
        "y",
        LinkParams(delay_us=5, rate_bps=8_000_000),
        random.Random(0),
        heap,
        itertools.count(),
        got.append,
        lambda: 0,
    )
    link.send(b"\x00" * 100, 0)  # 100 µs at 8 Mbit/s
    t, _, fn, arg = heapq.heappop(heap)
    fn(arg)
    assert t == 105 and got == [b"\x00" * 100] and repr(link) == "Link('x' -> 'y')"


def test_bytearray_from_endpoint_is_frozen_on_the_wire():
    buf = bytearray(ip4(A4, B4, 100, 1))

    class Reuser(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.sent = False

        def transmit(self) -> list[bytes]:
            if self.sent:
                return []
            self.sent = True
            return [buf]  # type: ignore[list-item]

    net = Network()
    net.add_host("a", Reuser(), [A4])
    sink = Sink()
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(delay_us=10))
    net.run(until=5)
    buf[20:24] = b"\xff\xff\xff\xff"
    net.run()
    assert seq_of(sink.got[0][1]) == 1 and type(sink.got[0][1]) is bytes


def test_service_drains_a_host_touched_out_of_band():
    net = Network()
    src = Source([])
    sink = Sink()
    net.add_host("a", src, [A4])
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(delay_us=10))

    class Poker(Sink):
        """Reaches into host a's endpoint from inside its own receive()."""

        def receive(self, packet: bytes, now: int) -> None:
            src.out.append(ip4(A4, B4, 100, 99))
            net.service("a")

    inj = net.add_injector("x", [C4])
    net.add_host("c", Poker(), ["198.18.0.4"])
    net.connect("x", "c")
    inj.send(ip4(C4, "198.18.0.4"), at=500)
    net.run()
    assert [(t, seq_of(p)) for t, p in sink.got] == [(510, 99)]
    with pytest.raises(TypeError):
        net.service("x")
    with pytest.raises(TypeError):
        net.call_at(1.5, lambda: None)  # type: ignore[arg-type]


def test_topology_change_during_run_reroutes():
    net = Network()
    net.add_host("a", Source([(0, ip4(A4, B4, 100, 1)), (1000, ip4(A4, B4, 100, 2))]), [A4])
    sink = Sink()
    net.add_host("b", sink, [B4])
    net.call_at(500, lambda: net.connect("a", "b", LinkParams(delay_us=7)))
    net.run()
    assert net.unroutable == 1
    assert [(t, seq_of(p)) for t, p in sink.got] == [(1007, 2)]


def test_unimpaired_traffic_does_not_perturb_random_stream():
    def lost(extra: bool) -> list[int]:
        net = Network(seed=12)
        net.add_host("a", Source([(i, ip4(A4, B4, 100, i)) for i in range(2000)]), [A4])
        sink = Sink()
        net.add_host("b", sink, [B4])
        net.connect("a", "b", LinkParams(loss=0.3, delay_us=3))
        if extra:
            net.add_host("c", Source([(i, ip4(C4, "198.18.0.4")) for i in range(0, 2000, 3)]), [C4])
            net.add_host("d", Sink(), ["198.18.0.4"])
            net.connect("c", "d", LinkParams(delay_us=5, rate_bps="100mbit"))
        net.run()
        return [seq_of(p) for _, p in sink.got]

    assert lost(False) == lost(True)


def _checksums_ok(p: bytes) -> bool:
    """Independent IPv4 + TCP checksum check (RFC 1071), for corruption tests."""

    def fold(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return total

    ihl = (p[0] & 0xF) * 4
    total_len = struct.unpack_from("!H", p, 2)[0]
    if ihl < 20 or total_len != len(p) or fold(p[:ihl]) != 0xFFFF:
        return False
    pseudo = p[12:20] + struct.pack("!BBH", 0, p[9], len(p) - ihl)
    return fold(pseudo + p[ihl:]) == 0xFFFF


@functools.cache
def _tcp_packets(n: int) -> tuple[bytes, ...]:
    import random

    from scapy.all import IP, TCP, raw

    # Random payload: half the bits are 1, so flips go both ways (an all-zero
    # payload only has 0->1 flips, which can never cancel in the sum).
    rnd = random.Random(0)
    return tuple(
        raw(
            IP(src=A4, dst=B4, id=i)
            / TCP(sport=1000 + i, dport=80, seq=i * 1000)
            / rnd.randbytes(100 + i % 300)
        )
        for i in range(n)
    )


@pytest.mark.parametrize("detectable", [False, True])
def test_corruption_the_checksum_cannot_see(detectable):
    packets = _tcp_packets(3000)
    assert all(_checksums_ok(p) for p in packets)
    net = Network(seed=1)
    net.add_host("a", Source([(0, p) for p in packets]), [A4])
    sink = Sink()
    net.add_host("b", sink, [B4])
    net.connect("a", "b", LinkParams(corrupt=1.0, corrupt_detectable=detectable))
    net.run()
    assert len(sink.got) == 3000
    assert all(p != q for (_, p), q in zip(sink.got, packets, strict=True))
    slipped = sum(_checksums_ok(p) for _, p in sink.got)
    if detectable:
        assert slipped == 0
    else:
        # Real links let some through: ~1/3 of packets get 2 flips, 1/32 of
        # which cancel in the ones'-complement sum (plus rarer 3-flip cases).
        assert 5 <= slipped <= 80


def test_set_params_mid_run_keeps_queued_packets_and_changes_rate():
    # 10 packets of 1000 bytes at 1 Mbit/s (8 ms each) sent at 0; at 20 ms
    # the rate becomes 8 Mbit/s (1 ms each). Already-serialized packets keep
    # their times; a packet sent at 30 ms waits for the old backlog (80 ms).
    net = Network()
    src = Source([(0, ip4(A4, B4, 1000, i)) for i in range(10)] + [(30_000, ip4(A4, B4, 1000, 10))])
    sink = Sink()
    net.add_host("a", src, [A4])
    net.add_host("b", sink, [B4])
    link, _ = net.connect("a", "b", LinkParams(rate_bps="1mbit"))
    net.call_at(20_000, lambda: link.set_params(LinkParams(rate_bps="8mbit")))
    net.run()
    times = [t for t, _ in sink.got]
    assert times[:10] == [8000 * (i + 1) for i in range(10)]
    assert times[10] == 81_000
    link.set_params(LinkParams(loss=1.0))
    src.schedule.append((net.now + 5, ip4(A4, B4)))
    net.run()
    assert link.dropped_loss == 1 and len(sink.got) == 11
