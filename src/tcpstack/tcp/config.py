"""Tunables, named after Linux's sysctls, with Linux's defaults and meaning.

Keys are accepted with or without the ``net.ipv4.`` / ``net.core.`` prefix,
everywhere in tcpstack (``--set``, ``tcpstack sysctl``, script init commands).
Where a tunable has no Linux sysctl (the TIME-WAIT length is a compile-time
constant there) the name says so in its doc string.  docs/tunables.md lists
each one as implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

CONGESTION_CONTROLS = ("cubic", "newreno", "reno")

# Refused keys: they do not exist (any more) on Linux, and the advice to set them is wrong.
REFUSED = {
    "tcp_tw_recycle": (
        "tcp_tw_recycle was removed from Linux in 4.12 (2017): it dropped SYNs from clients "
        "behind NAT whose timestamps are not monotonic across hosts. Advice to enable it is "
        "obsolete and wrong. TIME-WAIT is cheap; for outgoing connections use tcp_tw_reuse, "
        "widen ip_local_port_range, or pool connections."
    ),
}


# Per-connection constants (MSS, RTO bounds, the initial window) as one shared
# int object each: ints above 256 are separate 28-byte objects, and every TCB
# keeps several.
_SHARED_INTS: dict[int, int] = {}


def shared_int(x: int) -> int:
    """The process-wide int object equal to ``x`` (for per-TCB constants)."""
    return _SHARED_INTS.setdefault(x, x)


@dataclass
class Config:
    # --- connection establishment -------------------------------------------------
    tcp_syn_retries: int = 6  # SYN retransmissions before connect() fails (Linux: 6, ~127 s)
    tcp_synack_retries: int = 5  # SYN-ACK retransmissions for a half-open request (Linux: 5)
    tcp_syn_linear_timeouts: int = 4  # first SYN retries at the initial RTO, no backoff (Linux >= 6.5: 4)
    tcp_syncookies: int = 1  # 0 off, 1 when the SYN queue overflows, 2 always
    tcp_max_syn_backlog: int = 4096  # SYN queue bound (half-open requests per listener)
    somaxconn: int = 4096  # net.core.somaxconn: upper bound of listen(backlog) (Linux >= 5.4)
    tcp_abort_on_overflow: int = 0  # 1: answer a final ACK that finds the accept queue full with RST
    # --- data transfer --------------------------------------------------------------
    tcp_window_scaling: int = 1
    tcp_timestamps: int = 1
    tcp_sack: int = 1
    tcp_rmem: tuple[int, int, int] = (4096, 131072, 6291456)  # min default max receive buffer
    tcp_wmem: tuple[int, int, int] = (4096, 16384, 4194304)  # min default max send buffer
    tcp_congestion_control: str = "cubic"
    tcp_init_cwnd: int = 10  # Linux: the route's initcwnd (RFC 6928 IW10); not a sysctl there
    tcp_min_snd_mss: int = 48  # peer MSS below this is raised to it (Linux: 48)
    tcp_base_mss: int = 1024
    tcp_slow_start_after_idle: int = 1  # RFC 5681 §4.1 restart window after an idle RTO
    tcp_early_retrans: int = 3  # 3: tail loss probes (RFC 8985 §7) with SACK, as Linux; 0 off
    tcp_recovery: int = 0  # 1 (bit 0): RACK loss detection (RFC 8985 §6) with SACK, Linux's default; 0: RFC 6675 DupThresh
    tcp_delack_min_ms: int = 40  # Linux TCP_DELACK_MIN (no sysctl there)
    tcp_delack_max_ms: int = 200  # Linux TCP_DELACK_MAX (no sysctl there)
    # --- timers -------------------------------------------------------------------
    tcp_rto_min_us: int = 200_000  # Linux >= 6.11 sysctl; RFC 6298 says 1 s, Linux uses 200 ms
    tcp_rto_max_ms: int = 120_000  # Linux >= 6.15 sysctl; RFC 6298 (2.5) allows >= 60 s
    tcp_rto_initial_ms: int = 1_000  # RFC 6298 (2.1): 1 second (Linux TCP_TIMEOUT_INIT)
    tcp_retries1: int = 3
    tcp_retries2: int = 15  # retransmissions of one segment before the connection is dropped
    tcp_orphan_retries: int = 0  # Linux: 0 means 8 for orphaned sockets
    tcp_fin_timeout: int = 60  # seconds an orphaned FIN-WAIT-2 lives (NOT the TIME-WAIT length)
    tcp_timewait_len: int = 60  # tcpstack-only: TIME-WAIT length in s (Linux: fixed TCP_TIMEWAIT_LEN=60)
    tcp_invalid_ratelimit: int = 500  # ms between challenge ACKs on one connection (Linux: 500)
    tcp_keepalive_time: int = 7200
    tcp_keepalive_intvl: int = 75
    tcp_keepalive_probes: int = 9
    # --- TIME-WAIT and ports --------------------------------------------------------
    tcp_max_tw_buckets: int = 262144
    tcp_tw_reuse: int = 2  # 0 off, 1 on, 2 loopback only (Linux default 2)
    tcp_rfc1337: int = 0  # 1: RST in TIME-WAIT does not assassinate it (RFC 1337)
    ip_local_port_range: tuple[int, int] = (32768, 60999)
    # --- IP -------------------------------------------------------------------------
    ip_default_ttl: int = 64  # net.ipv4.ip_default_ttl: TTL of IPv4 packets (RFC 9293 MUST-49)
    hop_limit: int = 64  # net.ipv6.conf.all.hop_limit: Hop Limit of IPv6 packets (Linux: 64)
    # --- misc -----------------------------------------------------------------------
    tcp_ecn: int = 2  # accept ECN when asked, do not request it (not yet implemented beyond parsing)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------
    @staticmethod
    def key_name(key: str) -> str:
        """Strip the sysctl prefix: 'net.ipv4.tcp_sack' -> 'tcp_sack'."""
        k = key.strip().replace("/", ".")
        if k.endswith(".hop_limit") and k.startswith(("net.ipv6.conf.", "conf.")):
            return "hop_limit"  # net.ipv6.conf.{all,default}.hop_limit: one value here
        for prefix in ("net.ipv4.", "net.core.", "net.ipv6."):
            if k.startswith(prefix):
                return k[len(prefix) :]
        return k

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

    def get(self, key: str) -> Any:
        name = self.key_name(key)
        if name not in self.names():
            raise KeyError(f"unknown tunable {key!r}; see `tcpstack sysctl -a` for the list")
        return getattr(self, name)

    def set(self, key: str, value: Any) -> None:
        """Set one tunable from a string or a value, validating it.

        Raises KeyError for an unknown key, ValueError for a bad value or a
        refused key (with the reason).
        """
        name = self.key_name(key)
        if name in REFUSED:
            raise ValueError(f"{name} is refused: {REFUSED[name]}")
        if name not in self.names():
            raise KeyError(f"unknown tunable {key!r}; see `tcpstack sysctl -a` for the list")
        current = getattr(self, name)
        if isinstance(current, tuple):
            parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
            if len(parts) != len(current):
                raise ValueError(f"{name} takes {len(current)} integers, got {value!r}")
            try:
                new: Any = tuple(int(p) for p in parts)
            except ValueError:
                raise ValueError(f"{name} takes integers, got {value!r}") from None
        elif isinstance(current, str):
            new = str(value).strip()
            if name == "tcp_congestion_control" and new not in CONGESTION_CONTROLS:
                raise ValueError(
                    f"tcp_congestion_control must be one of {', '.join(CONGESTION_CONTROLS)}, got {new!r}"
                )
        else:
            try:
                new = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} takes an integer, got {value!r}") from None
        self._validate(name, new)
        setattr(self, name, new)

    def _validate(self, name: str, v: Any) -> None:
        ranges = {
            "tcp_syncookies": (0, 2),
            "tcp_tw_reuse": (0, 2),
            "tcp_window_scaling": (0, 1),
            "tcp_timestamps": (0, 2),
            "tcp_sack": (0, 1),
            "tcp_rfc1337": (0, 1),
            "tcp_abort_on_overflow": (0, 1),
            "tcp_slow_start_after_idle": (0, 1),
            "tcp_ecn": (0, 2),
            "tcp_early_retrans": (0, 4),
            "tcp_recovery": (0, 7),  # Linux's bits: 1 RACK, 2 static reo_wnd, 4 no DupThresh
            "tcp_syn_retries": (1, 127),
            "tcp_synack_retries": (0, 255),
            "tcp_retries2": (0, 255),
            "tcp_init_cwnd": (1, 1000),
            "tcp_min_snd_mss": (48, 65535),
            "ip_default_ttl": (1, 255),  # Linux: ip_ttl_min..ip_ttl_max
            "hop_limit": (1, 255),  # Linux: proc_dointvec_minmax with one..255
        }
        if name in ranges:
            lo, hi = ranges[name]
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be between {lo} and {hi}, got {v}")
        elif isinstance(v, int) and v < 0:
            raise ValueError(f"{name} must not be negative, got {v}")
        if name == "ip_local_port_range":
            lo, hi = v
            if not (1 <= lo <= hi <= 65535):
                raise ValueError(f"ip_local_port_range must be 1 <= low <= high <= 65535, got {v}")
        if name in ("tcp_rmem", "tcp_wmem"):
            a, b, c = v
            if not (0 < a <= b <= c):
                raise ValueError(f"{name} must be min <= default <= max, all positive, got {v}")

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.names()}

    def copy(self) -> Config:
        c = Config(**{n: getattr(self, n) for n in self.names()})
        return c
