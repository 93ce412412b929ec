"""What a parsed script is: events with times, and the actions they carry.

The shapes follow packetdrill's script language (an event is a time and an
action: an inbound or outbound packet, a system call, a shell command, or a
``%{ }%`` code block); the names are ours.  Times are integers in
microseconds, as everywhere in tcpstack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class ScriptError(Exception):
    """A script that cannot be parsed or makes no sense (packetdrill's
    "syntax error" / "semantic error"); ``line`` is 1-based."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


class TimeKind(Enum):
    ABSOLUTE = "absolute"  # 0.100 write(...)
    RELATIVE = "relative"  # +0.1 write(...)
    ANY = "any"  # * > . 1:1(0) ack 1  (outbound packets only)
    ABSOLUTE_RANGE = "absolute range"  # 0.1~0.2 > ...  (outbound packets only)
    RELATIVE_RANGE = "relative range"  # +0.1~+0.2 > ...  (outbound packets only)


@dataclass
class TimeSpec:
    kind: TimeKind
    usecs: int = 0
    end_usecs: int | None = None  # for ranges

    def describe(self) -> str:
        k = self.kind
        if k is TimeKind.ANY:
            return "*"
        if k is TimeKind.ABSOLUTE:
            return f"{self.usecs / 1e6:.6f}"
        if k is TimeKind.RELATIVE:
            return f"+{self.usecs / 1e6:.6f}"
        assert self.end_usecs is not None
        if k is TimeKind.ABSOLUTE_RANGE:
            return f"{self.usecs / 1e6:.6f}~{self.end_usecs / 1e6:.6f}"
        return f"+{self.usecs / 1e6:.6f}~+{self.end_usecs / 1e6:.6f}"


# ---------------------------------------------------------------- expressions (syscall arguments)


@dataclass
class Expr:
    line: int = field(default=0, kw_only=True, compare=False)


@dataclass
class EllipsisExpr(Expr):
    """``...``: "whatever the live value is" (addresses, buffers)."""


@dataclass
class IntExpr(Expr):
    value: int


@dataclass
class WordExpr(Expr):
    """A symbol such as SOCK_STREAM or O_NONBLOCK, resolved at run time."""

    name: str


@dataclass
class StringExpr(Expr):
    value: str


@dataclass
class ListExpr(Expr):
    """``[1]`` (a value passed by pointer) or ``[a, b]``."""

    items: list[Expr]


@dataclass
class BracedExpr(Expr):
    """``{...}``: a struct (pollfd, linger, iovec, sockaddr) as written."""

    items: list[Expr]

    def field(self, name: str) -> Expr | None:
        for it in self.items:
            if isinstance(it, BinaryExpr) and it.op == "=" and isinstance(it.lhs, WordExpr) and it.lhs.name == name:
                return it.rhs
        return None


@dataclass
class BinaryExpr(Expr):
    op: str  # "|" or "="
    lhs: Expr
    rhs: Expr


@dataclass
class CallExpr(Expr):
    """``htons(8080)``, ``inet_addr("198.18.0.1")``, ``msg_iov(1)``."""

    name: str
    args: list[Expr]


# ---------------------------------------------------------------- actions


@dataclass
class OptSpec:
    """A TCP option in a script packet: kind name and value.

    ``name``: "nop", "eol", "mss", "wscale", "sackOK", "sack", "TS",
    "raw" (an unknown kind given by number); ``value`` by name: int, list of
    (left, right), (val, ecr), or (kind, bytes).
    """

    name: str
    value: object = None

    def size(self) -> int:
        n = self.name
        if n in ("nop", "eol"):
            return 1
        if n == "mss":
            return 4
        if n == "wscale":
            return 3
        if n == "sackOK":
            return 2
        if n == "TS":
            return 10
        if n == "sack":
            assert isinstance(self.value, list)
            return 2 + 8 * len(self.value)
        assert isinstance(self.value, tuple)
        return 2 + len(self.value[1])

    def describe(self) -> str:
        n, v = self.name, self.value
        if n in ("nop", "eol", "sackOK"):
            return n
        if n in ("mss", "wscale"):
            return f"{n} {v}"
        if n == "TS":
            assert isinstance(v, tuple)
            return f"TS val {v[0]} ecr {v[1]}"
        if n == "sack":
            assert isinstance(v, list)
            return "sack " + " ".join(f"{a}:{b}" for a, b in v)
        assert isinstance(v, tuple)
        return f"kind {v[0]} 0x{v[1].hex()}"


@dataclass
class PacketAction:
    direction: str  # "<" inbound (the script's peer sends), ">" outbound (the stack sends)
    flags: int  # tcpstack.wire.tcp bits
    flags_text: str
    seq: int
    end_seq: int
    length: int
    ack: int  # 0 unless given
    win: int | None  # None: not checked (outbound only)
    urg: int
    options: list[OptSpec] | None  # None: <...>, not checked (outbound only)
    src_port: int | None = None
    dst_port: int | None = None

    def describe(self) -> str:
        parts = [self.flags_text or "-", f"{self.seq}:{self.end_seq}({self.length})"]
        if self.flags & 0x10:
            parts.append(f"ack {self.ack}")
        if self.win is not None:
            parts.append(f"win {self.win}")
        if self.urg:
            parts.append(f"urg {self.urg}")
        if self.options is None:
            parts.append("<...>")
        elif self.options:
            parts.append("<" + ",".join(o.describe() for o in self.options) + ">")
        return " ".join(parts)


@dataclass
class SyscallAction:
    name: str
    args: list[Expr]
    result: Expr
    errno: str | None = None  # EINPROGRESS
    note: str | None = None  # (Operation now in progress)
    end_usecs: int | None = None  # "...0.2": a blocking call that returns then

    @property
    def blocking(self) -> bool:
        return self.end_usecs is not None


@dataclass
class CommandAction:
    """A backquoted shell command.  tcpstack understands sysctl settings only."""

    text: str


@dataclass
class CodeAction:
    """``%{ python }%``: assertions on tcp_info (``tcpi_*``) at this time."""

    text: str


Action = PacketAction | SyscallAction | CommandAction | CodeAction


@dataclass
class Event:
    line: int
    time: TimeSpec
    action: Action

    @property
    def is_inbound(self) -> bool:
        return isinstance(self.action, PacketAction) and self.action.direction == "<"

    @property
    def is_outbound(self) -> bool:
        return isinstance(self.action, PacketAction) and self.action.direction == ">"


@dataclass
class Script:
    path: str
    events: list[Event]
    options: dict[str, str | None] = field(default_factory=dict)  # --tolerance_usecs=8000
    init_command: CommandAction | None = None
    cleanup_command: CommandAction | None = None
    header: dict[str, str] = field(default_factory=dict)  # "// tcpstack-deviation: why" comments
