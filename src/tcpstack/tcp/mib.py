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
    "TCPRenoFailures",
    "TCPSackFailures",
    "TCPLossFailures",
    "TCPFastRetrans",
    "TCPSlowStartRetrans",
    "TCPTimeouts",
    "TCPLossProbes",
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
)


class Mib:
    __slots__ = TCP_COUNTERS + TCPEXT_COUNTERS

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        """Linux MIB name -> value (unprefixed, as in /proc/net/netstat's columns)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def nstat(self) -> dict[str, int]:
        """nstat's names: TcpInSegs, TcpExtListenOverflows, ..."""
        out = {f"Tcp{n}": getattr(self, n) for n in TCP_COUNTERS}
        out.update({f"TcpExt{n}": getattr(self, n) for n in TCPEXT_COUNTERS})
        return out
