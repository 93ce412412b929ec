"""Checksum offload: a partial checksum is the pseudo-header sum, completed by the device."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tcpstack.wire.checksum import internet_checksum
from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp
from tcpstack.wire.tcp import ACK, PSH, Opt, Segment


def complete(packet: bytes, ihl: int = 20) -> bytes:
    """What a NIC / the kernel does for CHECKSUM_PARTIAL: checksum the TCP
    bytes (whose checksum field holds the pseudo-header sum) and store it inverted."""
    tcp = bytearray(packet[ihl:])
    csum = internet_checksum(bytes(tcp))
    tcp[16:18] = csum.to_bytes(2, "big")
    return packet[:ihl] + bytes(tcp)


@given(st.binary(max_size=1500), st.booleans(), st.integers(0, 2**32 - 1))
def test_partial_checksum_completed_equals_full_checksum(payload, with_ts, seq):
    opts = (Opt(1, None), Opt(1, None), Opt(8, (123, 456))) if with_ts else ()
    seg = Segment(1234, 80, seq, 99, ACK | PSH, 512, 0, opts, payload)
    full = build_ip_tcp("198.18.0.2", "198.18.0.1", seg)
    partial = build_ip_tcp("198.18.0.2", "198.18.0.1", seg, partial_csum=True)
    assert partial[:36] == full[:36] and partial[38:] == full[38:]  # only the checksum differs
    assert complete(partial) == full
    assert parse_ip_tcp(partial, verify_checksum=False)[2] == parse_ip_tcp(full)[2]


def test_partial_checksum_ipv6():
    seg = Segment(1234, 80, 7, 9, ACK, 512, 0, (), b"hello world")
    full = build_ip_tcp("fd00:198:18::2", "fd00:198:18::1", seg)
    partial = build_ip_tcp("fd00:198:18::2", "fd00:198:18::1", seg, partial_csum=True)
    assert complete(partial, 40) == full
