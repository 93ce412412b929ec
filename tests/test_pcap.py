"""pcap writing and reading, judged by independent tools.

tshark must open what we write and dissect the same fields we put in (scapy
builds the packets, so neither side of the check is ours); editcap and scapy
produce the pcapng and Ethernet files we must read back. Hand-built files
cover what those tools will not produce on demand (big-endian, nanosecond
magic, odd pcapng resolutions, cooked Linux headers) and malformed input.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.all import ARP, IP, TCP, Dot1Q, Ether, IPv6, Padding, raw, wrpcap, wrpcapng

from tcpstack.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    PcapWriter,
    read_packets,
)

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"
EDITCAP = shutil.which("editcap") or "/usr/bin/editcap"
T0 = 1_700_000_000_000_000  # 2023-11-14, in µs


def tcp4(i: int, payload: bytes = b"") -> bytes:
    return raw(
        IP(src="198.18.0.1", dst="198.18.0.2", id=i)
        / TCP(sport=40000 + i, dport=80, seq=1000 + i * 7919, ack=5, flags="PA")
        / payload
    )


def tcp6(i: int, payload: bytes = b"") -> bytes:
    return raw(
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / TCP(sport=50000 + i, dport=443, seq=77 + i, flags="A")
        / payload
    )


def sample() -> list[tuple[int, bytes]]:
    out = []
    for i in range(20):
        pkt = tcp4(i, bytes([i]) * (i * 50)) if i % 3 else tcp6(i, b"x" * i)
        out.append((T0 + i * 1_234_567 + (i % 7), pkt))
    return out


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run tshark/editcap; fail on any stderr beyond the run-as-root notice."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    noise = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and "This could be dangerous" not in line
    ]
    assert proc.returncode == 0 and not noise, (proc.returncode, proc.stderr)
    return proc


# ------------------------------------------------------------------ writer


def test_write_then_read_back(tmp_path):
    path = tmp_path / "a.pcap"
    packets = sample()
    with PcapWriter(path) as w:
        for ts, p in packets:
            w.write(ts, p)
    assert w.closed
    assert list(read_packets(path)) == packets
    assert list(read_packets(str(path))) == packets
    with open(path, "rb") as f:
        assert list(read_packets(f)) == packets
    header = path.read_bytes()[:24]
    assert struct.unpack("<IHHiIII", header) == (0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_RAW)


def test_writer_accepts_views_and_leaves_caller_file_open():
    buf = io.BytesIO()
    w = PcapWriter(buf, linktype=LINKTYPE_IPV4)
    p = tcp4(1, b"data")
    w.write(5, memoryview(p))
    w.write(6, bytearray(p))
    w.close()
    w.close()  # idempotent
    assert not buf.closed
    buf.seek(0)
    assert list(read_packets(buf)) == [(5, p), (6, p)]


def test_snaplen_truncates_and_keeps_original_length(tmp_path):
    path = tmp_path / "s.pcap"
    p = tcp4(1, b"z" * 500)
    with PcapWriter(path, snaplen=64) as w:
        w.write(0, p)
    data = path.read_bytes()
    _, _, caplen, origlen = struct.unpack_from("<IIII", data, 24)
    assert (caplen, origlen) == (64, len(p))
    assert list(read_packets(path)) == [(0, p[:64])]


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        PcapWriter(tmp_path / "x.pcap", snaplen=0)
    with pytest.raises(ValueError):
        PcapWriter(tmp_path / "x.pcap", linktype=70000)


# ----------------------------------------------------- tshark as the judge


def test_tshark_dissects_what_we_wrote(tmp_path):
    path = tmp_path / "t.pcap"
    packets = sample()
    with PcapWriter(path) as w:
        for ts, p in packets:
            w.write(ts, p)
    proc = tool(
        TSHARK,
        "-r",
        str(path),
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "frame.time_epoch",
        "-e",
        "ip.src",
        "-e",
        "ipv6.src",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.seq_raw",
        "-e",
        "tcp.len",
        "-e",
        "tcp.checksum.status",
        "-e",
        "_ws.malformed",
    )
    rows = [line.split("|") for line in proc.stdout.splitlines()]
    assert len(rows) == len(packets)
    for (ts, pkt), (epoch, src4, src6, sport, seq, tlen, csum, malformed) in zip(
        packets, rows, strict=True
    ):
        sec, frac = epoch.split(".")
        assert int(sec) * 1_000_000 + int(frac[:6]) == ts
        if pkt[0] >> 4 == 4:
            ip = IP(pkt)
            assert src4 == "198.18.0.1" and not src6
        else:
            ip = IPv6(pkt)
            assert src6 == "2001:db8::1" and not src4
        assert int(sport) == ip[TCP].sport
        assert int(seq) == ip[TCP].seq
        assert int(tlen) == len(ip[TCP].payload)
        assert csum == "1"  # tshark: checksum good
        assert malformed == ""


def test_tshark_reads_simulator_capture(tmp_path):
    from tcpstack.sim import LinkParams, Network

    class Once:
        def __init__(self, packets: list[bytes]) -> None:
            self.out = packets

        def receive(self, packet: bytes, now: int) -> None:
            pass

        def poll(self, now: int) -> None:
            pass

        def next_deadline(self) -> int | None:
            return None

        def transmit(self) -> list[bytes]:
            out, self.out = self.out, []
            return out

    net = Network(seed=1)
    net.add_host("a", Once([tcp4(i) for i in range(5)]), ["198.18.0.1"])
    net.add_host("b", Once([]), ["198.18.0.2"])
    net.connect("a", "b", LinkParams(delay_us=1500, rate_bps="1mbit"))
    with net.pcap(tmp_path / "sim.pcap", node="b"):
        net.run()
    proc = tool(TSHARK, "-r", str(tmp_path / "sim.pcap"), "-T", "fields", "-e", "frame.time_epoch")
    # 40-byte packets at 1 Mbit/s: 320 µs apart, plus 1.5 ms of delay.
    assert proc.stdout.split() == [f"0.{1500 + 320 * (i + 1):06d}000" for i in range(5)]


# ---------------------------------------------- files other tools produced


def test_read_pcapng_written_by_editcap(tmp_path):
    src = tmp_path / "a.pcap"
    packets = sample()
    with PcapWriter(src) as w:
        for ts, p in packets:
            w.write(ts, p)
    dst = tmp_path / "a.pcapng"
    tool(EDITCAP, "-F", "pcapng", str(src), str(dst))
    assert dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert list(read_packets(dst)) == packets


def test_read_nanosecond_pcap_and_its_pcapng_conversion(tmp_path):
    packets = sample()
    src = tmp_path / "ns.pcap"
    with open(src, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for ts, p in packets:
            f.write(struct.pack("<IIII", ts // 10**6, (ts % 10**6) * 1000 + 999, len(p), len(p)))
            f.write(p)
    assert list(read_packets(src)) == packets  # ns are floored to µs
    dst = tmp_path / "ns.pcapng"
    tool(EDITCAP, "-F", "pcapng", str(src), str(dst))
    assert list(read_packets(dst)) == packets  # if_tsresol = 9 there


def test_read_ethernet_pcap_from_scapy(tmp_path):
    path = tmp_path / "eth.pcap"
    a, b = tcp4(1, b"abc"), tcp6(2, b"defg")
    small = tcp4(3)  # 40 bytes: an Ethernet frame pads it to 60
    frames = [
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(a),
        Ether() / ARP(),  # not IP: skipped
        Ether() / IPv6(b),
        Ether() / Dot1Q(vlan=7) / IP(a),
        Ether(type=0x88A8) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IPv6(b),
        Ether() / IP(small) / Padding(load=b"\x00" * 6),
    ]
    for i, frame in enumerate(frames):
        frame.time = 1000 + i / 10
    wrpcap(str(path), frames)
    assert struct.unpack_from("<I", path.read_bytes(), 20)[0] == LINKTYPE_ETHERNET
    got = list(read_packets(path))
    assert [p for _, p in got] == [a, b, a, b, small]
    assert [t for t, _ in got] == [
        1_000_000_000,
        1_000_200_000,
        1_000_300_000,
        1_000_400_000,
        1_000_500_000,
    ]


def test_read_ethernet_pcapng_from_scapy(tmp_path):
    path = tmp_path / "eth.pcapng"
    frames = [Ether() / IP(tcp4(i, b"q" * i)) for i in range(5)]
    for i, frame in enumerate(frames):
        frame.time = 2000 + i
    wrpcapng(str(path), frames)
    assert [(t, p) for t, p in read_packets(path)] == [
        (2_000_000_000 + i * 1_000_000, tcp4(i, b"q" * i)) for i in range(5)
    ]


# ------------------------------------------------------------- hand-built


def classic(order: str, magic: int, linktype: int, records: list[tuple[int, int, bytes]]) -> bytes:
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, frac, data in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data
    return out


def test_big_endian_classic():
    p = tcp4(9)
    data = classic(">", 0xA1B2C3D4, LINKTYPE_RAW, [(3, 500, p)])
    assert list(read_packets(io.BytesIO(data))) == [(3_000_500, p)]
    data = classic(">", 0xA1B23C4D, LINKTYPE_IPV6, [(3, 500_999, tcp6(1))])
    assert list(read_packets(io.BytesIO(data))) == [(3_000_500, tcp6(1))]


def test_linktype_ipv4_ipv6_filter_by_version():
    data = classic("<", 0xA1B2C3D4, LINKTYPE_IPV4, [(0, 1, tcp4(1)), (0, 2, tcp6(1))])
    assert [p for _, p in read_packets(io.BytesIO(data))] == [tcp4(1)]
    data = classic("<", 0xA1B2C3D4, LINKTYPE_RAW, [(0, 1, b"\x00" * 20), (0, 2, tcp6(1))])
    assert [p for _, p in read_packets(io.BytesIO(data))] == [tcp6(1)]


def test_linux_cooked_sll_and_sll2():
    p4, p6 = tcp4(1, b"hi"), tcp6(1)
    sll = [
        struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", 0x0800) + p4,
        struct.pack("!HHH8sH", 4, 1, 6, b"\x02" * 6 + b"\0\0", 0x0806) + b"\0" * 28,  # ARP
        struct.pack("!HHH8sH", 4, 772, 0, b"\0" * 8, 0x86DD) + p6 + b"\xee" * 4,
    ]
    data = classic("<", 0xA1B2C3D4, LINKTYPE_LINUX_SLL, [(1, i, f) for i, f in enumerate(sll)])
    assert [p for _, p in read_packets(io.BytesIO(data))] == [p4, p6]
    sll2 = [
        struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x02" * 8) + p4,
        struct.pack("!HHIHBB8s", 0x86DD, 0, 1, 772, 4, 0, b"\0" * 8) + p6,
    ]
    data = classic("<", 0xA1B2C3D4, LINKTYPE_LINUX_SLL2, [(1, i, f) for i, f in enumerate(sll2)])
    assert [p for _, p in read_packets(io.BytesIO(data))] == [p4, p6]


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def shb(order: str = "<") -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def idb(order: str, linktype: int, options: bytes = b"", snaplen: int = 0) -> bytes:
    if options:
        options += struct.pack(order + "HH", 0, 0)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + options)


def epb(order: str, iface: int, ts: int, data: bytes) -> bytes:
    head = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(order, 6, head + data)


def test_pcapng_resolutions_offsets_sections_and_block_kinds():
    p4, p6 = tcp4(1), tcp6(2)
    eth = raw(Ether() / IP(p4))
    f = shb("<")
    f += idb("<", LINKTYPE_RAW)  # if 0: default µs
    f += idb("<", LINKTYPE_ETHERNET, option("<", 9, b"\x09"))  # if 1: ns
    f += idb("<", LINKTYPE_RAW, option("<", 9, b"\x8a") + option("<", 14, struct.pack("<q", 100)))
    f += block("<", 4, b"\0" * 8)  # name resolution block: skipped
    f += epb("<", 0, 1_500_000, p4)
    f += epb("<", 1, 2_000_000_123, eth)
    f += epb("<", 2, 1024 * 3, p6)  # 3 s at 2^-10 s ticks, +100 s offset
    f += block("<", 3, struct.pack("<I", len(p6)) + p6)  # SPB: interface 0, no time
    f += block("<", 2, struct.pack("<HHIIII", 0, 0, 0, 4_000_000, len(p4), len(p4)) + p4)  # OPB
    f += block("<", 5, b"\0" * 12)  # interface statistics: skipped
    # A second, big-endian section: interface ids start over.
    f += shb(">") + idb(">", LINKTYPE_IPV6, option(">", 9, b"\x03")) + epb(">", 0, 7, p6)
    assert list(read_packets(io.BytesIO(f))) == [
        (1_500_000, p4),
        (2_000_000, p4),
        (103_000_000, p6),
        (103_000_000, p6),
        (4_000_000, p4),
        (7000, p6),
    ]


# --------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "only 0 bytes"),
        (b"GIF89a" + b"\0" * 40, "bad magic"),
        (struct.pack("<I", 0xA1B2C3D4) + b"\0" * 6, "global header"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 0, 101), "version 3"),
        (classic("<", 0xA1B2C3D4, 101, [(0, 0, tcp4(1))])[:-5], "packet data"),
        (classic("<", 0xA1B2C3D4, 101, [(0, 0, tcp4(1))]) + b"\0" * 7, "record header"),
        (classic("<", 0xA1B2C3D4, 105, [(0, 0, b"\0" * 30)]), "unsupported link type 105"),
        (
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0, 101)
            + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30),
            "captured length",
        ),
        (shb()[:20], "section header"),
        (shb()[:8] + b"\x01\x02\x03\x04" + shb()[12:], "byte-order magic"),
        (shb() + idb("<", 101) + epb("<", 0, 0, tcp4(1))[:-4], "truncated"),
        (shb() + idb("<", 101) + epb("<", 0, 0, tcp4(1))[:-4] + b"\0\0\0\0", "trailing length"),
        (shb() + struct.pack("<II", 6, 10) + b"\0" * 4, "length 10"),
        (shb() + idb("<", 101) + epb("<", 3, 0, tcp4(1)), "interface 3"),
        (shb() + idb("<", 147) + epb("<", 0, 0, b"\0" * 20), "unsupported link type 147"),
        (shb() + idb("<", 101) + block("<", 6, b"\0" * 8), "enhanced packet block"),
        (
            shb() + idb("<", 101) + block("<", 6, struct.pack("<IIIII", 0, 0, 0, 500, 500)),
            "exceeds the block",
        ),
    ],
)
def test_malformed_files_raise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        list(read_packets(io.BytesIO(data)))


def test_unused_unsupported_interface_is_not_an_error():
    f = shb() + idb("<", 147) + idb("<", LINKTYPE_RAW) + epb("<", 1, 5, tcp4(1))
    assert list(read_packets(io.BytesIO(f))) == [(5, tcp4(1))]


def test_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_packets(Path(tmp_path / "nope.pcap")))
