"""Counters named as Linux names them in /proc/net/snmp (Tcp:) and /proc/net/netstat (TcpExt:).

``nstat`` prints them prefixed (``TcpActiveOpens``, ``TcpExtTCPChallengeACK``);
``Mib.nstat()`` returns that form so tcpstack's numbers can be compared with
the kernel's side by side.  Counters are plain attributes (``mib.InSegs += 1``)
because they are bumped per segment.
"""

from __future__ import annotations

TCP_COUNTERS = (
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "EstabResets",
    "CurrEstab",  # a gauge, as in Linux
    "InSegs",
    "OutSegs",
    "RetransSegs",
    "InErrs",
    "OutRsts",
    "InCsumErrors",
)

TCPEXT_COUNTERS = (
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
    "EmbryonicRsts",
    "TW",
    "TWRecycled",
    "TWKilled",
    "PAWSActive",
    "PAWSEstab",
    "DelayedACKs",
    "ListenOverflows",
    "ListenDrops",
    "TCPPureAcks",
    "TCPHPAcks",
    "TCPSackRecovery",
    "TCPRenoRecovery",
    "TCPSACKReneging",
    "TCPFullUndo",
    "TCPLostRetransmit",
    "TCPSACKReorder",
    "TCPRenoFailures",
    "TCPSackFailures",
    "TCPLossFailures",
    "TCPFastRetrans",
    "TCPSlowStartRetrans",
    "TCPTimeouts",
    "TCPLossProbes",
    "TCPLossProbeRecovery",
    "TCPRcvCollapsed",
    "TCPDSACKOldSent",
    "TCPDSACKOfoSent",
    "TCPDSACKRecv",
    "TCPAbortOnData",
    "TCPAbortOnClose",
    "TCPAbortOnMemory",
    "TCPAbortOnTimeout",
    "TCPAbortOnLinger",
    "TCPAbortFailed",
    "TCPMemoryPressures",
    "TCPSACKDiscard",
    "TCPDSACKIgnoredOld",
    "TCPSpuriousRTOs",
    "TCPSackShifted",
    "TCPSackMerged",
    "TCPBacklogDrop",
    "TCPMinTTLDrop",
    "TCPTimeWaitOverflow",
    "TCPReqQFullDoCookies",
    "TCPReqQFullDrop",
    "TCPRetransFail",
    "TCPRcvCoalesce",
    "TCPOFOQueue",
    "TCPOFODrop",
    "TCPOFOMerge",
    "TCPChallengeACK",
    "TCPSYNChallenge",
    "TCPSpuriousRtxHostQueues",
    "TCPAutoCorking",
    "TCPFromZeroWindowAdv",
    "TCPToZeroWindowAdv",
    "TCPWantZeroWindowAdv",
    "TCPSynRetrans",
    "TCPOrigDataSent",
    "TCPKeepAlive",
    "TCPDelivered",
    "TCPAckCompressed",
    "TCPWinProbe",
    "TCPRcvQDrop",
    "TCPZeroWindowDrop",
    "PAWSOldAck",
    "OutOfWindowIcmps",
    "TCPDeliveredCE",
)

# /proc/net/netstat's IpExt: ECN fields of received packets (RFC 3168), counted
# here for the segments that reach a connection; InNoECTPkts is not kept (it
# would cost a counter per packet for the common case).
IPEXT_COUNTERS = (
    "InECT1Pkts",
    "InECT0Pkts",
    "InCEPkts",
)

# /proc/net/snmp's Icmp: line and /proc/net/snmp6's Icmp6 counters, as nstat
# names them (the attribute is the nstat name: Icmp's InErrors is not Tcp's InErrs).
ICMP_COUNTERS = (
    "IcmpInMsgs",
    "IcmpInErrors",
    "IcmpInCsumErrors",
    "IcmpInDestUnreachs",
    "IcmpInTimeExcds",
    "IcmpInParmProbs",
    "IcmpInSrcQuenchs",
    "IcmpInRedirects",
    "Icmp6InMsgs",
    "Icmp6InErrors",
    "Icmp6InCsumErrors",
    "Icmp6InDestUnreachs",
    "Icmp6InPktTooBigs",
    "Icmp6InTimeExcds",
    "Icmp6InParmProblems",
)


class Mib:
    __slots__ = TCP_COUNTERS + TCPEXT_COUNTERS + ICMP_COUNTERS + IPEXT_COUNTERS
    # Declared for the type checker (the values are set in __init__).
    ActiveOpens: int
    PassiveOpens: int
    AttemptFails: int
    EstabResets: int
    CurrEstab: int
    InSegs: int
    OutSegs: int
    RetransSegs: int
    InErrs: int
    OutRsts: int
    InCsumErrors: int
    SyncookiesSent: int
    SyncookiesRecv: int
    SyncookiesFailed: int
    EmbryonicRsts: int
    TW: int
    TWRecycled: int
    TWKilled: int
    PAWSActive: int
    PAWSEstab: int
    DelayedACKs: int
    ListenOverflows: int
    ListenDrops: int
    TCPPureAcks: int
    TCPHPAcks: int
    TCPSackRecovery: int
    TCPRenoRecovery: int
    TCPSACKReneging: int
    TCPFullUndo: int
    TCPLostRetransmit: int
    TCPSACKReorder: int
    TCPRenoFailures: int
    TCPSackFailures: int
    TCPLossFailures: int
    TCPFastRetrans: int
    TCPSlowStartRetrans: int
    TCPTimeouts: int
    TCPLossProbes: int
    TCPLossProbeRecovery: int
    TCPRcvCollapsed: int
    TCPDSACKOldSent: int
    TCPDSACKOfoSent: int
    TCPDSACKRecv: int
    TCPAbortOnData: int
    TCPAbortOnClose: int
    TCPAbortOnMemory: int
    TCPAbortOnTimeout: int
    TCPAbortOnLinger: int
    TCPAbortFailed: int
    TCPMemoryPressures: int
    TCPSACKDiscard: int
    TCPDSACKIgnoredOld: int
    TCPSpuriousRTOs: int
    TCPSackShifted: int
    TCPSackMerged: int
    TCPBacklogDrop: int
    TCPMinTTLDrop: int
    TCPTimeWaitOverflow: int
    TCPReqQFullDoCookies: int
    TCPReqQFullDrop: int
    TCPRetransFail: int
    TCPRcvCoalesce: int
    TCPOFOQueue: int
    TCPOFODrop: int
    TCPOFOMerge: int
    TCPChallengeACK: int
    TCPSYNChallenge: int
    TCPSpuriousRtxHostQueues: int
    TCPAutoCorking: int
    TCPFromZeroWindowAdv: int
    TCPToZeroWindowAdv: int
    TCPWantZeroWindowAdv: int
    TCPSynRetrans: int
    TCPOrigDataSent: int
    TCPKeepAlive: int
    TCPDelivered: int
    TCPAckCompressed: int
    TCPWinProbe: int
    TCPRcvQDrop: int
    TCPZeroWindowDrop: int
    PAWSOldAck: int
    OutOfWindowIcmps: int
    TCPDeliveredCE: int
    InECT1Pkts: int
    InECT0Pkts: int
    InCEPkts: int
    IcmpInMsgs: int
    IcmpInErrors: int
    IcmpInCsumErrors: int
    IcmpInDestUnreachs: int
    IcmpInTimeExcds: int
    IcmpInParmProbs: int
    IcmpInSrcQuenchs: int
    IcmpInRedirects: int
    Icmp6InMsgs: int
    Icmp6InErrors: int
    Icmp6InCsumErrors: int
    Icmp6InDestUnreachs: int
    Icmp6InPktTooBigs: int
    Icmp6InTimeExcds: int
    Icmp6InParmProblems: int

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        """Linux MIB name -> value (unprefixed, as in /proc/net/netstat's columns)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def nstat(self) -> dict[str, int]:
        """nstat's names: TcpInSegs, TcpExtListenOverflows, IcmpInMsgs, ..."""
        out = {f"Tcp{n}": getattr(self, n) for n in TCP_COUNTERS}
        out.update({f"TcpExt{n}": getattr(self, n) for n in TCPEXT_COUNTERS})
        out.update({n: getattr(self, n) for n in ICMP_COUNTERS})
        out.update({f"IpExt{n}": getattr(self, n) for n in IPEXT_COUNTERS})
        return out
