"""The TUN device and the namespace against the real kernel.

scapy is only the oracle here (it builds and dissects packets); the kernel is
the judge: it must send us a SYN we can read, and accept what we write back
(a RST refuses its connect, a SYN-ACK completes its handshake).
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet, Raw

from tcpstack.runtime import (
    KERNEL_ADDR4,
    KERNEL_ADDR6,
    STACK_ADDR4,
    STACK_ADDR6,
    VNET_HDR_NONE,
    NetnsLease,
    NetnsTun,
    TunDevice,
    VnetHdr,
    ensure_netns,
    in_netns,
    netns_exists,
)
from tcpstack.runtime.tun import (
    TUN_F_CSUM,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
)

from .privileges import run_as_nobody

KERNEL4 = KERNEL_ADDR4.split("/")[0]
KERNEL6 = KERNEL_ADDR6.split("/")[0]
FAMILIES = {
    "ipv4": (socket.AF_INET, STACK_ADDR4, KERNEL4),
    "ipv6": (socket.AF_INET6, STACK_ADDR6, KERNEL6),
}
OUR_ISS = 1000
TIMEOUT = 5.0


# -- helpers -------------------------------------------------------------------


def ip_json(*args: str) -> list[dict]:
    out = subprocess.run(
        ["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return json.loads(out or "[]")


def netns_list() -> list[str]:
    return [ns["name"] for ns in ip_json("netns", "list")]


def root_tcps_devices() -> set[str]:
    return {link["ifname"] for link in ip_json("link", "show") if link["ifname"].startswith("tcps")}


def parse(frame: bytes | memoryview) -> Packet:
    data = bytes(frame)
    return IPv6(data) if data[0] >> 4 == 6 else IP(data)


def l3(pkt: Packet) -> Packet:
    return pkt[IPv6] if IPv6 in pkt else pkt[IP]


def packets(tun: TunDevice, *, timeout: float = TIMEOUT, max_frames: int = 20_000) -> Iterator:
    """Yield (VnetHdr, scapy packet) as frames arrive; bounded in time and count."""
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < max_frames:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([tun.fileno()], [], [], left)
        if not ready:
            continue
        for hdr, mv in tun.read_batch_vnet():
            seen += 1
            yield hdr, parse(mv)


def expect(
    tun: TunDevice, want: Callable[[Packet], bool], what: str, *, timeout: float = TIMEOUT
) -> tuple[VnetHdr, Packet]:
    skipped = []
    for hdr, pkt in packets(tun, timeout=timeout):
        if TCP in pkt and want(pkt):
            return hdr, pkt
        skipped.append(pkt.summary())
    raise AssertionError(f"no {what} from the kernel within {timeout}s; other frames: {skipped}")


def is_syn(pkt: Packet, port: int) -> bool:
    """The kernel's SYN to ``port`` (ECE/CWR allowed: tcp_ecn=1 kernels set them)."""
    flags = pkt[TCP].flags
    return pkt[TCP].dport == port and bool(flags.S) and not (flags.A or flags.R)


def reply(syn: Packet, **tcp: object) -> Packet:
    """A packet from the stack's address back to whoever sent ``syn``."""
    ip = l3(syn)
    hdr = IPv6(src=ip.dst, dst=ip.src) if IPv6 in syn else IP(src=ip.dst, dst=ip.src)
    return hdr / TCP(sport=syn[TCP].dport, dport=syn[TCP].sport, **tcp)


def kernel_connect(
    pool: ThreadPoolExecutor, netns: str, family: int, addr: str, port: int
) -> Future[socket.socket]:
    """The kernel (in ``netns``) connects to addr:port in a thread; the future holds the socket."""

    def run() -> socket.socket:
        with in_netns(netns):
            s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        try:
            s.connect((addr, port))
        except BaseException:
            s.close()
            raise
        return s

    return pool.submit(run)


def handshake(
    pool: ThreadPoolExecutor, nt: NetnsTun, family: str, port: int
) -> tuple[socket.socket, Packet]:
    """Complete a kernel-initiated handshake by hand; returns the kernel's socket and its SYN."""
    fam, stack_addr, _ = FAMILIES[family]
    fut = kernel_connect(pool, nt.netns, fam, stack_addr, port)
    _, syn = expect(nt.tun, lambda p: is_syn(p, port), "SYN")
    synack = reply(
        syn,
        flags="SA",
        seq=OUR_ISS,
        ack=syn[TCP].seq + 1,
        window=65535,
        options=[("MSS", 1400 if family == "ipv6" else 1460)],
    )
    assert nt.tun.write(bytes(synack))
    _, ack = expect(nt.tun, lambda p: p[TCP].sport == syn[TCP].sport and p[TCP].flags == "A", "ACK")
    assert ack[TCP].ack == OUR_ISS + 1
    assert ack[TCP].seq == syn[TCP].seq + 1
    return fut.result(timeout=TIMEOUT), syn


def pseudo_header_sum(pkt: bytes) -> int:
    """Folded, non-inverted one's-complement sum of the TCP pseudo-header (CHECKSUM_PARTIAL)."""
    if pkt[0] >> 4 == 6:
        l4len = len(pkt) - 40
        words = pkt[8:40] + struct.pack("!IxxxB", l4len, socket.IPPROTO_TCP)
    else:
        ihl = (pkt[0] & 15) * 4
        l4len = len(pkt) - ihl
        words = pkt[12:20] + struct.pack("!xBH", socket.IPPROTO_TCP, l4len)
    s = sum(struct.unpack(f"!{len(words) // 2}H", words))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.fixture
def nt(netns_name: str) -> Iterator[NetnsTun]:
    with NetnsTun(netns_name, addr6=KERNEL_ADDR6) as n:
        yield n


# -- both directions of the device: the kernel's SYN out, our RST / SYN-ACK in ---


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_syn_read_and_rst_refuses_connect(
    nt: NetnsTun, pool: ThreadPoolExecutor, family: str
) -> None:
    fam, stack_addr, kernel_addr = FAMILIES[family]
    port = 8080
    fut = kernel_connect(pool, nt.netns, fam, stack_addr, port)

    _, syn = expect(nt.tun, lambda p: is_syn(p, port), "SYN")
    assert l3(syn).dst == stack_addr
    assert l3(syn).src == kernel_addr
    assert dict(syn[TCP].options).get("MSS") == (1460 if family == "ipv4" else 1440)

    rst = reply(syn, flags="RA", seq=0, ack=syn[TCP].seq + 1, window=0)
    assert nt.tun.write(bytes(rst))
    with pytest.raises(ConnectionRefusedError):
        fut.result(timeout=TIMEOUT)
    assert nt.tun.tx_packets == 1 and nt.tun.tx_drops == 0
    assert nt.tun.rx_packets >= 1


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_crafted_synack_completes_kernel_handshake(
    nt: NetnsTun, pool: ThreadPoolExecutor, family: str
) -> None:
    sock, syn = handshake(pool, nt, family, 8081)
    with sock:
        # Data both ways over the hand-made connection.
        sock.sendall(b"hello tcpstack")
        _, data = expect(nt.tun, lambda p: Raw in p, "data segment")
        assert data[Raw].load == b"hello tcpstack"
        assert data[TCP].seq == syn[TCP].seq + 1

        payload = b"hello kernel"
        seg = reply(syn, flags="PA", seq=OUR_ISS + 1, ack=syn[TCP].seq + 1 + 14, window=65535)
        assert nt.tun.write(bytes(seg / Raw(payload)))
        assert sock.recv(100) == payload
        rst = reply(syn, flags="R", seq=OUR_ISS + 1 + len(payload))
        assert nt.tun.write(bytes(rst))


# -- configuration as the kernel sees it ----------------------------------------


def test_device_configuration(nt: NetnsTun) -> None:
    (link,) = ip_json("-n", nt.netns, "-d", "link", "show", "dev", nt.ifname)
    assert link["mtu"] == 1500
    assert link["txqlen"] == 10000
    assert "UP" in link["flags"]
    assert link["linkinfo"]["info_kind"] == "tun"
    assert link["linkinfo"]["info_data"]["type"] == "tun"
    assert link["linkinfo"]["info_data"]["pi"] is False
    (addrs,) = ip_json("-n", nt.netns, "addr", "show", "dev", nt.ifname)
    infos = {(a["local"], a["prefixlen"]): a for a in addrs["addr_info"]}
    assert set(infos) == {(KERNEL4, 24), (KERNEL6, 64)}  # no link-local, no .2
    assert not infos[(KERNEL6, 64)].get("tentative"), "IPv6 DAD would delay the link"
    routes = ip_json("-n", nt.netns, "route", "get", STACK_ADDR4)
    assert routes[0]["dev"] == nt.ifname
    assert nt.stack_addr4 == STACK_ADDR4 and nt.stack_addr6 == STACK_ADDR6
    assert nt.created_netns
    assert nt.ifname not in root_tcps_devices()  # it lives in the namespace only


def test_ipv4_only_device_carries_no_ipv6(netns_name: str) -> None:
    with NetnsTun(netns_name) as n:
        (addrs,) = ip_json("-n", n.netns, "addr", "show", "dev", n.ifname)
        assert [a["family"] for a in addrs["addr_info"]] == ["inet"]
        time.sleep(0.2)
        assert n.tun.read_batch() == []


# -- cleanup --------------------------------------------------------------------


def test_close_leaves_nothing_behind(netns_name: str) -> None:
    before = root_tcps_devices()
    n = NetnsTun(netns_name, addr6=KERNEL_ADDR6)
    assert netns_name in netns_list()
    assert ip_json("-n", netns_name, "link", "show", "dev", n.ifname)
    n.close()
    n.close()  # idempotent
    assert netns_name not in netns_list()
    assert not netns_exists(netns_name)
    assert root_tcps_devices() <= before
    assert n.tun.closed


def test_existing_namespace_is_kept_device_removed(netns_name: str) -> None:
    assert ensure_netns(netns_name) is True
    assert ensure_netns(netns_name) is False
    with NetnsTun(netns_name) as n:
        assert not n.created_netns
        ifname = n.ifname
        assert [link["ifname"] for link in ip_json("-n", netns_name, "link")] == ["lo", ifname]
    assert netns_name in netns_list()
    names = [link["ifname"] for link in ip_json("-n", netns_name, "link")]
    assert not [x for x in names if x.startswith("tcps")], names


def test_failed_device_creation_removes_the_namespace_it_made(netns_name: str) -> None:
    # "lo" exists and is not a TUN: the kernel refuses TUNSETIFF after the namespace exists.
    with pytest.raises(OSError):
        NetnsTun(netns_name, ifname="lo")
    assert not netns_exists(netns_name)
    with pytest.raises(ValueError):
        NetnsTun(netns_name, mtu=10)
    assert not netns_exists(netns_name)


def test_netns_lease_removes_only_what_it_created(netns_name: str) -> None:
    with NetnsLease(netns_name) as lease:
        assert lease.created and netns_exists(netns_name)
        with NetnsLease(netns_name) as inner:
            assert not inner.created
        assert netns_exists(netns_name)
    assert not netns_exists(netns_name)


def test_in_netns_switches_this_thread_only_and_back(netns_name: str) -> None:
    def ino() -> int:
        return os.stat("/proc/thread-self/ns/net").st_ino

    ensure_netns(netns_name)
    home = ino()
    target = os.stat(f"/run/netns/{netns_name}").st_ino
    go, done = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def bystander() -> None:  # started before the switch: stays home
        go.wait(TIMEOUT)
        seen["bystander"] = ino()
        done.set()

    t = threading.Thread(target=bystander)
    t.start()
    with in_netns(netns_name):
        assert ino() == target
        go.set()
        done.wait(TIMEOUT)
        # A thread started inside inherits its creator's namespace (clone(2) semantics).
        child = threading.Thread(target=lambda: seen.__setitem__("child", ino()))
        child.start()
        child.join(TIMEOUT)
    t.join(TIMEOUT)
    assert seen == {"bystander": home, "child": target}
    assert ino() == home
    with pytest.raises(RuntimeError), in_netns(netns_name):
        raise RuntimeError("body failed")
    assert ino() == home
    with pytest.raises(FileNotFoundError, match="does not exist"), in_netns("tcpstack-absent-x"):
        pass


# -- privileges -----------------------------------------------------------------


def test_unprivileged_user_gets_a_clear_permission_error(netns_name: str) -> None:
    ensure_netns(netns_name)

    def attempts() -> list[str]:
        caps = [x for x in open("/proc/self/status") if x.startswith("CapEff:")]
        results = [f"uid={os.geteuid()} {caps[0].split()[1]}"]
        for label, attempt in (
            ("netns_tun", lambda: NetnsTun(netns_name + "-nobody")),
            ("tun", lambda: TunDevice()),
            ("in_netns", lambda: in_netns(netns_name).__enter__()),
        ):
            try:
                attempt()
            except PermissionError as e:
                results.append(f"{label}: PermissionError: {e}")
            except BaseException as e:
                results.append(f"{label}: UNEXPECTED {type(e).__name__}: {e}")
            else:
                results.append(f"{label}: UNEXPECTED success")
        return results

    whoami, *lines = run_as_nobody(attempts)
    assert whoami == "uid=65534 0000000000000000", whoami
    assert len(lines) == 3, lines
    for line in lines:
        assert ": PermissionError: tcpstack up needs CAP_NET_ADMIN (run as root" in line, line
    assert "CAP_SYS_ADMIN" in lines[0] and "CAP_SYS_ADMIN" in lines[2]
    assert not netns_exists(netns_name + "-nobody")


# -- offload --------------------------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_offload_vnet_header_and_gso_both_ways(
    netns_name: str, pool: ThreadPoolExecutor, family: str, capsys: pytest.CaptureFixture
) -> None:
    with NetnsTun(netns_name, addr6=KERNEL_ADDR6, offload=True) as n:
        tun = n.tun
        with capsys.disabled():
            print(
                f"\n[offload] kernel {os.uname().release}: accepted={tun.offload} "
                f"flags={tun.offload_flags:#x} vnet_hdr_len={tun.vnet_hdr_len}"
            )
        if not tun.offload:
            assert tun.vnet_hdr_len == 0 and tun.offload_flags == 0  # clean fallback
            pytest.xfail("this kernel refused TUNSETOFFLOAD; fell back to plain frames")
        assert tun.offload_flags & TUN_F_CSUM
        assert tun.vnet_hdr_len == 10

        port = 8082
        fam, stack_addr, _ = FAMILIES[family]
        fut = kernel_connect(pool, n.netns, fam, stack_addr, port)
        hdr, syn = expect(tun, lambda p: is_syn(p, port), "SYN")
        iphl = 40 if family == "ipv6" else 20
        # The kernel leaves the checksum to "hardware": a parseable partial-checksum header.
        assert not hdr.is_gso
        if hdr.needs_csum:
            assert (hdr.csum_start, hdr.csum_offset) == (iphl, 16)
        with capsys.disabled():
            print(f"[offload] {family} SYN header: {hdr}")
        mss = 1400
        synack = reply(
            syn, flags="SA", seq=OUR_ISS, ack=syn[TCP].seq + 1, window=65535, options=[("MSS", mss)]
        )
        assert tun.write(bytes(synack))  # plain packet: a zero header is prepended
        expect(tun, lambda p: p[TCP].flags == "A" and p[TCP].ack == OUR_ISS + 1, "ACK")
        sock = fut.result(timeout=TIMEOUT)
        with sock:
            # Kernel -> us: within the initial cwnd (10 * MSS), TSO hands us super-segments.
            blob = os.urandom(9 * mss)
            sock.sendall(blob)
            got = bytearray()
            gso_seen = []
            start = syn[TCP].seq + 1
            for h, p in packets(tun):
                if Raw in p and p[TCP].dport == port:
                    off = p[TCP].seq - start
                    assert off == len(got), "segments arrive in order on a TUN"
                    got += p[Raw].load
                    if h.is_gso:
                        gso_seen.append((h.gso_type, h.gso_size, len(p[Raw].load)))
                if len(got) >= len(blob):
                    break
            assert bytes(got) == blob
            with capsys.disabled():
                print(
                    f"[offload] {family} kernel->us GSO frames (type, gso_size, payload): {gso_seen}"
                )
            want_type = VIRTIO_NET_HDR_GSO_TCPV6 if family == "ipv6" else VIRTIO_NET_HDR_GSO_TCPV4
            assert gso_seen, "no GSO super-segment from the kernel despite TSO offload"
            assert all(t == want_type and size == mss for t, size, _ in gso_seen)

            # Us -> kernel: one GSO write of 8 segments, checksum left to the kernel.
            data = os.urandom(8 * mss)
            seg = reply(
                syn,
                flags="PA",
                seq=OUR_ISS + 1,
                ack=start + len(blob),
                window=65535,
            ) / Raw(data)
            raw = bytearray(bytes(seg))
            struct.pack_into("!H", raw, iphl + 16, pseudo_header_sum(bytes(raw)))
            gso = VnetHdr.tcp_gso(iphl, 20, mss, ipv6=family == "ipv6")
            assert gso.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
            assert tun.write_vnet(gso, raw)
            received = bytearray()
            deadline = time.monotonic() + TIMEOUT
            while len(received) < len(data) and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            assert bytes(received) == data
            expect(tun, lambda p: p[TCP].ack == OUR_ISS + 1 + len(data), "ACK of the GSO write")
            assert tun.tx_drops == 0
            assert tun.write(bytes(reply(syn, flags="R", seq=OUR_ISS + 1 + len(data))))


def test_write_vnet_without_offload_is_refused(nt: NetnsTun) -> None:
    with pytest.raises(ValueError, match="offload is off"):
        nt.tun.write_vnet(VnetHdr.tcp_csum(20), b"\x45" + bytes(39))
    assert nt.tun.write_batch_vnet([]) == 0
    rst = IP(src=STACK_ADDR4, dst=KERNEL4) / TCP(sport=1, dport=2, flags="R")
    assert nt.tun.write_vnet(VNET_HDR_NONE, bytes(rst))


def test_refused_write_is_counted_as_drop_not_raised(nt: NetnsTun) -> None:
    # A TUN write does not block in practice, so stand a full non-blocking pipe
    # in for the device's fd to make the kernel answer EAGAIN.
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        for _ in range(10_000):
            try:
                os.write(w, bytes(4096))
            except BlockingIOError:
                break
        os.dup2(w, nt.tun.fileno())  # closes the TUN fd: the device goes away
        pkt = bytes(IP(src=STACK_ADDR4, dst=KERNEL4) / TCP(sport=1, dport=2, flags="R"))
        assert nt.tun.write(pkt) is False
        assert nt.tun.write_batch([pkt, pkt, pkt]) == 0
        assert (nt.tun.tx_packets, nt.tun.tx_drops) == (0, 4)
    finally:
        os.close(r)
        os.close(w)


def test_vnet_hdr_round_trip() -> None:
    h = VnetHdr.tcp_gso(20, 32, 1448)
    assert VnetHdr.unpack(h.pack()) == h
    assert len(h.pack(12)) == 12 and VnetHdr.unpack(h.pack(12)) == h
    assert h.hdr_len == 52 and h.csum_start == 20 and h.csum_offset == 16
    assert h.is_gso and h.needs_csum
    assert not VNET_HDR_NONE.is_gso and not VNET_HDR_NONE.needs_csum


# -- cost of the syscalls (measured and printed, never asserted) -----------------


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_measure_tun_syscall_cost(
    netns_name: str, offload: bool, record_property: Callable, capsys: pytest.CaptureFixture
) -> None:
    n_packets = 3000
    with NetnsTun(netns_name, offload=offload) as n:
        tun = n.tun
        # SYNs to a closed port: the kernel answers each with a RST, inside our write call.
        syn = bytes(IP(src=STACK_ADDR4, dst=KERNEL4) / TCP(sport=40000, dport=9, flags="S", seq=7))
        batch = [syn] * n_packets
        t0 = time.perf_counter()
        sent = tun.write_batch(batch)
        t_write = time.perf_counter() - t0
        assert sent == n_packets and tun.tx_drops == 0

        got = reads = 0
        t_read = 0.0
        deadline = time.monotonic() + TIMEOUT
        while got < n_packets and time.monotonic() < deadline:
            select.select([tun.fileno()], [], [], 0.5)
            t0 = time.perf_counter()
            frames = tun.read_batch(64)
            t_read += time.perf_counter() - t0
            got += len(frames)
            reads += len(frames) + 1  # the final EAGAIN read of each batch
        # txqueuelen 10000: a burst of 3000 replies waits in the queue, none dropped.
        assert got == n_packets
        assert tun.rx_packets == n_packets
        w_us = t_write / n_packets * 1e6
        r_us = t_read / got * 1e6
        record_property("write_us_per_packet", round(w_us, 2))
        record_property("read_us_per_packet", round(r_us, 2))
        with capsys.disabled():
            print(
                f"\n[tun cost {'offload' if offload else 'plain'}] {n_packets} packets: "
                f"write_batch {w_us:.2f} us/packet (kernel RST generation included), "
                f"read_batch {r_us:.2f} us/packet ({reads} os.read calls incl. EAGAIN)"
            )
