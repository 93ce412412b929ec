"""The wire layer's one exception family.

A packet the wire layer cannot turn into headers raises ``MalformedPacket``
(or a subclass) and nothing else: the stack drops it, counts it and traces
the ``reason``, exactly as a kernel does with a bad header (RFC 9293 §3.10.7
gives a segment no right to crash the receiver).  Checksum failures are their
own subclasses because the stack counts them separately, as Linux's
``InCsumErrors`` (RFC 1071 checksums, RFC 791 §3.1 header checksum).

Building a packet from unbuildable values (a port of 70000, 44 bytes of
options) is misuse by the caller and raises a plain ``ValueError`` instead.
"""

from __future__ import annotations

__all__ = ["ChecksumError", "IPChecksumError", "MalformedPacket", "NotTcp"]


class MalformedPacket(ValueError):
    """Bytes that are not a packet we accept; ``reason`` says precisely why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChecksumError(MalformedPacket):
    """The TCP checksum (over pseudo-header, header and data) does not verify."""


class IPChecksumError(MalformedPacket):
    """The IPv4 header checksum does not verify."""


class NotTcp(MalformedPacket):
    """A well-formed IP packet that does not carry TCP; ``packet`` is its IP
    layer (an ``ip.IPPacket``), so the stack can look at ICMP without parsing
    the IP header again."""

    def __init__(self, reason: str, packet: object) -> None:
        super().__init__(reason)
        self.packet = packet
