"""RFC 1071 checksum and the pseudo-header, against a word-by-word reference."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_testlib import ref_checksum, ref_ones_sum, ref_pseudo_header

from tcpstack.wire import internet_checksum, ones_sum, pseudo_header_sum


def test_rfc1071_section_3_example():
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (checksum 220d).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_known_ipv4_header_checksum():
    # A header from a real capture (Wikipedia's IPv4 checksum example): b861.
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(hdr) == 0xB861
    with_sum = hdr[:10] + b"\xb8\x61" + hdr[12:]
    assert internet_checksum(with_sum) == 0


@pytest.mark.parametrize("n", [0, 1, 2, 3, 19, 20, 1459, 1460])
def test_all_zero_input_sums_to_plus_zero(n):
    # Only all-zero data sums to +0; its checksum is 0xFFFF.
    assert ones_sum(bytes(n)) == 0
    assert internet_checksum(bytes(n)) == 0xFFFF


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 40, 1461])
def test_all_ff_input_sums_to_minus_zero(n):
    data = b"\xff" * n
    assert ones_sum(data) == ref_ones_sum(data)
    assert internet_checksum(data) == ref_checksum(data)
    if n % 2 == 0:
        # Non-zero data whose sum is a multiple of 0xFFFF is -0 (0xFFFF), never +0.
        assert ones_sum(data) == 0xFFFF
        assert internet_checksum(data) == 0


def test_nonzero_words_summing_to_multiple_of_ffff_give_minus_zero():
    data = struct.pack("!HH", 0x8000, 0x7FFF)
    assert int.from_bytes(data, "big") % 0xFFFF == 0
    assert ones_sum(data) == 0xFFFF
    assert internet_checksum(data) == 0


def test_odd_length_pads_last_byte_as_high_octet():
    assert ones_sum(b"\x12") == 0x1200
    assert ones_sum(b"\x00\x01\x02") == 0x0201
    assert internet_checksum(b"\xab\xcd\xef") == ~(0xABCD + 0xEF00 - 0xFFFF) & 0xFFFF


def test_initial_is_folded_in():
    data = bytes.fromhex("0001f203")
    assert ones_sum(data, 0xF4F5) == ones_sum(bytes.fromhex("0001f203f4f5"))
    # An initial of -0 with zero data: the sum is -0, so the checksum is 0.
    assert internet_checksum(b"", 0xFFFF) == 0
    assert internet_checksum(b"\0\0", 0) == 0xFFFF


def test_accepts_bytearray_and_memoryview():
    data = bytes(range(200)) * 3
    expected = ref_checksum(data)
    assert internet_checksum(bytearray(data)) == expected
    assert internet_checksum(memoryview(data)) == expected
    assert internet_checksum(memoryview(data)[1:]) == ref_checksum(data[1:])


@settings(deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_matches_reference(data, initial):
    assert ones_sum(data, initial) == ref_ones_sum(data, initial)
    assert internet_checksum(data, initial) == ref_checksum(data, initial)


@given(st.binary(min_size=2, max_size=600), st.integers(0, 299))
def test_inserted_checksum_verifies(data, at):
    # Put the checksum into a zeroed, word-aligned field: the whole then verifies to 0.
    at = 2 * (at % (len(data) // 2))
    zeroed = data[:at] + b"\0\0" + data[at + 2 :]
    csum = internet_checksum(zeroed)
    filled = zeroed[:at] + struct.pack("!H", csum) + zeroed[at + 2 :]
    assert internet_checksum(filled) == 0


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 0xFFFF))
def test_pseudo_header_ipv4(src, dst, length):
    expected = ref_ones_sum(ref_pseudo_header(src, dst, length))
    got = pseudo_header_sum(src, dst, 6, length)
    assert got == expected
    payload = bytes(length % 50)
    assert internet_checksum(payload, got) == ref_checksum(
        ref_pseudo_header(src, dst, length) + payload
    )


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 0xFFFFFFFF),
)
def test_pseudo_header_ipv6(src, dst, length):
    assert pseudo_header_sum(src, dst, 6, length) == ref_ones_sum(
        ref_pseudo_header(src, dst, length)
    )


def test_pseudo_header_minus_zero():
    # Words ffff + 0 ... sum to -0: returned as 0xFFFF, not 0.
    assert pseudo_header_sum(b"\xff\xff\0\0", bytes(4), 0, 0) == 0xFFFF
    assert pseudo_header_sum(bytes(4), bytes(4), 0, 0) == 0


def test_pseudo_header_rejects_mixed_or_bad_addresses():
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        pseudo_header_sum(bytes(4), bytes(16), 6, 20)
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        pseudo_header_sum(bytes(5), bytes(5), 6, 20)
    with pytest.raises(ValueError, match="length 65536"):
        pseudo_header_sum(bytes(4), bytes(4), 6, 65536)
    with pytest.raises(ValueError, match="protocol 256"):
        pseudo_header_sum(bytes(4), bytes(4), 256, 20)
