"""Parsers for the kernel's TCP views under /proc: text in, plain values out.

Nothing here opens a file; :mod:`tcpstack.doctor.source` does the reading.
Every function takes the text of one file so the tests can feed captured
samples, and so a saved snapshot parses exactly like the live kernel.

/proc/net/tcp and /proc/net/tcp6 are printed by ``get_tcp4_sock()``,
``get_openreq4()`` and ``get_timewait4_sock()`` in net/ipv4/tcp_ipv4.c (and
their tcp6 twins). One line per socket, whitespace-separated::

    sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
    0: 0100007F:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000 0 0 5747 ...

- addresses are the in-memory ``__be32`` words printed with ``%08X``, i.e. in
  the host's byte order: on a little-endian machine 127.0.0.1 reads
  ``0100007F``. IPv6 addresses are four such words.
- ports are host-order numbers in hex.
- ``st`` is the kernel state number (include/net/tcp_states.h).
- for a LISTEN socket ``rx_queue`` is the current accept-queue length
  (``sk_ack_backlog``); for others it is unread bytes (``rcv_nxt - copied_seq``)
  and ``tx_queue`` is unacknowledged bytes (``write_seq - snd_una``).
- ``retrnsmt`` is ``icsk_retransmits``: consecutive unanswered retransmission
  timeouts of this socket right now.
- ``inode`` is the socket's inode in sockfs, the number a process's
  ``/proc/PID/fd/N -> socket:[INODE]`` link names; it is 0 when no file
  refers to the socket: TIME-WAIT and orphaned FIN-WAIT-2 mini-sockets,
  request sockets (SYN-RECEIVED), orphans the application already closed, and
  connections still waiting in a listener's accept queue.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass

# The eleven RFC 9293 states, in the RFC's own spelling and order of the
# state diagram. JSON output always carries all eleven.
RFC9293_STATES: tuple[str, ...] = (
    "LISTEN",
    "SYN-SENT",
    "SYN-RECEIVED",
    "ESTABLISHED",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "CLOSE-WAIT",
    "CLOSING",
    "LAST-ACK",
    "TIME-WAIT",
    "CLOSED",
)

# include/net/tcp_states.h -> RFC 9293 names.
# TCP_NEW_SYN_RECV (12) is the kernel's internal mark for a request socket
# (a half-open connection kept as a small struct request_sock). /proc/net/tcp
# does not print 12 for them: get_openreq4() hard-codes TCP_SYN_RECV (3).
# We still map 12 to SYN-RECEIVED so any tool's dump that kept the raw state
# is read correctly.
KERNEL_STATES: dict[int, str] = {
    0x01: "ESTABLISHED",
    0x02: "SYN-SENT",
    0x03: "SYN-RECEIVED",
    0x04: "FIN-WAIT-1",
    0x05: "FIN-WAIT-2",
    0x06: "TIME-WAIT",
    0x07: "CLOSED",
    0x08: "CLOSE-WAIT",
    0x09: "LAST-ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "SYN-RECEIVED",  # TCP_NEW_SYN_RECV
}


@dataclass(slots=True)
class TcpSocket:
    """One line of /proc/net/tcp or tcp6."""

    family: int  # 4 or 6
    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    state: str  # RFC 9293 name, or "UNKNOWN-0xNN"
    state_code: int
    send_q: int  # tx_queue; 0 for LISTEN
    recv_q: int  # rx_queue; accept-queue length for LISTEN
    retransmits: int
    uid: int
    inode: int


class ProcFormatError(ValueError):
    """A /proc text did not have the shape the kernel prints."""


def _word_swap(b: bytes) -> bytes:
    # Reverse the bytes of every 32-bit word: undoes %08X of a __be32 on a
    # little-endian host.
    return b"".join(b[i : i + 4][::-1] for i in range(0, len(b), 4))


class AddressDecoder:
    """Hex address as printed by the kernel -> text, cached.

    ``little_endian`` is the byte order of the machine that *printed* the file
    (a snapshot records it), not necessarily ours.
    """

    __slots__ = ("_cache", "_little")

    def __init__(self, little_endian: bool = sys.byteorder == "little") -> None:
        self._little = little_endian
        self._cache: dict[str, str] = {}

    def __call__(self, hexaddr: str) -> str:
        text = self._cache.get(hexaddr)
        if text is not None:
            return text
        try:
            raw = bytes.fromhex(hexaddr)
        except ValueError as exc:
            raise ProcFormatError(f"bad address {hexaddr!r}") from exc
        if self._little:
            raw = _word_swap(raw)
        if len(raw) == 4:
            text = socket.inet_ntop(socket.AF_INET, raw)
        elif len(raw) == 16:
            text = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            raise ProcFormatError(f"bad address length {hexaddr!r}")
        self._cache[hexaddr] = text
        return text


def state_name(code: int) -> str:
    return KERNEL_STATES.get(code) or f"UNKNOWN-0x{code:02X}"


def parse_tcp_table(
    text: str, family: int, decode: AddressDecoder | None = None
) -> list[TcpSocket]:
    """Parse the whole text of /proc/net/tcp (family 4) or tcp6 (family 6).

    Plain ``str.split`` per line and a cached address decoder: 10,000 lines
    parse in a few tens of milliseconds.
    """
    if decode is None:
        decode = AddressDecoder()
    sockets: list[TcpSocket] = []
    append = sockets.append
    states = KERNEL_STATES
    lines = text.splitlines()
    if not lines:
        return sockets
    start = 1 if lines[0].lstrip().startswith("sl") else 0
    for lineno, line in enumerate(lines[start:], start + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 10:
            raise ProcFormatError(f"line {lineno}: expected at least 10 fields, got {len(fields)}")
        # Fixed widths, as printed: ADDR:%04X ports, %08X:%08X queues.
        loc, rem, queues = fields[1], fields[2], fields[4]
        if loc[-5:-4] != ":" or rem[-5:-4] != ":" or queues[8:9] != ":":
            raise ProcFormatError(f"line {lineno}: unexpected field layout: {line.strip()!r}")
        try:
            code = int(fields[3], 16)
            append(
                TcpSocket(
                    family,
                    decode(loc[:-5]),
                    int(loc[-4:], 16),
                    decode(rem[:-5]),
                    int(rem[-4:], 16),
                    states.get(code) or f"UNKNOWN-0x{code:02X}",
                    code,
                    int(queues[:8], 16),
                    int(queues[9:], 16),
                    int(fields[6], 16),
                    int(fields[7]),
                    int(fields[9]),
                )
            )
        except ValueError as exc:
            raise ProcFormatError(f"line {lineno}: {exc}: {line.strip()!r}") from exc
    return sockets


def parse_mib_pairs(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/netstat and /proc/net/snmp: a header line of names followed
    by a line of values, both starting with the same ``Group:`` prefix.

    Returns ``{"TcpExt": {"ListenOverflows": 0, ...}, "Tcp": {...}, ...}``.
    """
    out: dict[str, dict[str, int]] = {}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    i = 0
    while i + 1 < len(lines):
        group, _, names = lines[i].partition(":")
        vgroup, _, values = lines[i + 1].partition(":")
        if group != vgroup:
            i += 1  # out of step (a truncated file): resynchronise
            continue
        keys = names.split()
        try:
            nums = [int(v) for v in values.split()]
        except ValueError:
            i += 1  # this was a value line; the next one may be a header
            continue
        if len(keys) == len(nums):
            out.setdefault(group, {}).update(zip(keys, nums, strict=True))
        i += 2
    return out


def parse_sockstat(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/sockstat: ``TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1``."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        group, _, rest = line.partition(":")
        words = rest.split()
        fields: dict[str, int] = {}
        for key, value in zip(words[::2], words[1::2], strict=False):
            try:
                fields[key] = int(value)
            except ValueError:
                continue
        if group.strip():
            out[group.strip()] = fields
    return out


def parse_sysctl_value(text: str) -> int | list[int] | str:
    """A /proc/sys file: one int, a vector of ints (tcp_rmem,
    ip_local_port_range), or a string (tcp_congestion_control)."""
    words = text.split()
    try:
        nums = [int(w) for w in words]
    except ValueError:
        return text.strip()
    if len(nums) == 1:
        return nums[0]
    return nums
