"""bytes <-> headers: IPv4 (RFC 791), IPv6 (RFC 8200), TCP and its options
(RFC 9293 §3.1/§3.2, RFC 7323, RFC 2018), ICMP error messages (RFC 792,
RFC 4443) and the Internet checksum (RFC 1071).

Pure functions on bytes, standard library only; the engine (``tcpstack.tcp``)
sees ``Segment`` values, never bytes.  Parsing raises ``MalformedPacket`` (or a
checksum subclass) and nothing else; building raises ``ValueError`` for values
that cannot go on the wire.
"""

from .checksum import internet_checksum, ones_sum, pseudo_header_sum
from .errors import ChecksumError, IPChecksumError, MalformedPacket, NotTcp
from .icmp import IcmpMessage, build_icmp_error, parse_icmp
from .ip import IPPacket, build_ip_tcp, ip_version, parse_ip, parse_ip_tcp
from .tcp import (
    ACK,
    AE,
    CWR,
    ECE,
    EOL,
    FIN,
    NOP,
    OPT_EOL,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TS,
    OPT_WSCALE,
    PSH,
    RST,
    SACK_PERM_OPT,
    SYN,
    URG,
    Opt,
    Segment,
    build_tcp,
    format_options,
    mss_opt,
    parse_tcp,
    sack_opt,
    ts_opt,
    wscale_opt,
)

__all__ = [
    "ACK",
    "AE",
    "CWR",
    "ECE",
    "EOL",
    "FIN",
    "NOP",
    "OPT_EOL",
    "OPT_MSS",
    "OPT_NOP",
    "OPT_SACK",
    "OPT_SACK_PERM",
    "OPT_TS",
    "OPT_WSCALE",
    "PSH",
    "RST",
    "SACK_PERM_OPT",
    "SYN",
    "URG",
    "ChecksumError",
    "IPChecksumError",
    "IPPacket",
    "IcmpMessage",
    "MalformedPacket",
    "NotTcp",
    "Opt",
    "Segment",
    "build_icmp_error",
    "build_ip_tcp",
    "build_tcp",
    "format_options",
    "internet_checksum",
    "ip_version",
    "mss_opt",
    "ones_sum",
    "parse_icmp",
    "parse_ip",
    "parse_ip_tcp",
    "parse_tcp",
    "pseudo_header_sum",
    "sack_opt",
    "ts_opt",
    "wscale_opt",
]
