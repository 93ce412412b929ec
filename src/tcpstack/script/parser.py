"""A recursive-descent parser for packetdrill's script language.

The grammar (after packetdrill's parser.y, written here from its
description, not translated)::

    script     := option* [BACKQUOTE] event+ [BACKQUOTE]
    option     := OPTION ['=' value]
    event      := time action
    time       := '*' | '+' num ['~' '+' num] | num ['~' num]
    action     := packet | syscall | BACKQUOTE | CODE
    packet     := ('<' | '>') [ports] flags seq [ack N] [win N] [urg N] [options]
    ports      := INT '>' INT
    flags      := WORD ['.'] | '.' | '-'
    seq        := INT ':' INT '(' INT ')'
    options    := '<' '...' '>' | '<' option (',' option)* '>'
    syscall    := ['...' num] WORD '(' [expr (',' expr)*] ')' '=' expr [WORD] [note]
    expr       := primary ('|' primary)* | (WORD | call) '=' expr
    primary    := '...' | INT | HEX | WORD | call | STRING+ | '[' exprs ']' | '{' exprs '}'
    note       := '(' anything ')'

Numbers in times are seconds (integer or decimal); they become microseconds.
"""

from __future__ import annotations

import re

from ..wire.tcp import ACK, AE, CWR, ECE, FIN, PSH, RST, SYN, URG
from .addressing import IP_VERSIONS
from .lexer import Token, tokenize
from .model import (
    Action,
    BinaryExpr,
    BracedExpr,
    CallExpr,
    CodeAction,
    CommandAction,
    EllipsisExpr,
    Event,
    Expr,
    IntExpr,
    ListExpr,
    OptSpec,
    PacketAction,
    Script,
    ScriptError,
    StringExpr,
    SyscallAction,
    TimeKind,
    TimeSpec,
    WordExpr,
)

FLAG_BITS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, ".": ACK, "U": URG, "E": ECE, "W": CWR, "A": AE}
_HEADER_RE = re.compile(r"^\s*//\s*tcpstack-([a-z][a-z-]*)\s*:\s*(.*?)\s*$")
U32 = 0xFFFFFFFF


def parse_script(text: str, path: str = "<script>") -> Script:
    """Parse a whole script; raises ScriptError with the line of the problem."""
    parser = _Parser(tokenize(text, path), path)
    script = parser.script()
    for line in text.splitlines():
        m = _HEADER_RE.match(line)
        if m:
            script.header[m.group(1)] = m.group(2)
    return script


def parse_file(path: str) -> Script:
    with open(path, encoding="utf-8") as f:
        return parse_script(f.read(), path)


class _Parser:
    def __init__(self, tokens: list[Token], path: str) -> None:
        self.toks = tokens
        self.i = 0
        self.path = path

    # -- token helpers -------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> Token:
        t = self.toks[self.i]
        if t.kind != "EOF":
            self.i += 1
        return t

    def error(self, message: str, tok: Token | None = None) -> ScriptError:
        t = tok or self.tok
        near = "end of file" if t.kind == "EOF" else repr(t.text)
        return ScriptError(self.path, t.line, f"{message} (near {near})")

    def is_punct(self, ch: str, tok: Token | None = None) -> bool:
        t = tok or self.tok
        return t.kind == "PUNCT" and t.text == ch

    def expect_punct(self, ch: str, what: str = "") -> Token:
        if not self.is_punct(ch):
            raise self.error(f"expected '{ch}'" + (f" {what}" if what else ""))
        return self.advance()

    def expect_word(self, word: str) -> Token:
        if self.tok.kind != "WORD" or self.tok.text != word:
            raise self.error(f"expected '{word}'")
        return self.advance()

    def expect_int(self, what: str, lo: int = 0, hi: int = U32) -> int:
        t = self.tok
        if t.kind == "INT":
            v = int(t.text)
        elif t.kind == "HEX":
            v = int(t.text, 16)
        else:
            raise self.error(f"expected an integer for {what}")
        if not lo <= v <= hi:
            raise self.error(f"{what} {v} out of range {lo}..{hi}")
        self.advance()
        return v

    # -- script --------------------------------------------------------------------
    def script(self) -> Script:
        options: dict[str, str | None] = {}
        while self.tok.kind == "OPTION":
            tok = self.advance()
            name, eq, value_text = tok.text[2:].partition("=")
            value: str | None = value_text if eq else None
            if not eq and self.is_punct("="):
                self.advance()
                v = self.advance()
                if v.kind in ("EOF", "PUNCT"):
                    raise self.error(f"expected a value for --{name}", v)
                value = v.text
            if name == "ip_version" and value not in IP_VERSIONS:
                raise self.error(f"--ip_version={value}: unknown IP version (choose one of {', '.join(IP_VERSIONS)})",
                                 tok)
            options[name] = value
        init = None
        if self.tok.kind == "BACKQUOTE":
            init = CommandAction(_unquote(self.advance().text))
        events: list[Event] = []
        cleanup = None
        while self.tok.kind != "EOF":
            if self.tok.kind == "BACKQUOTE" and self.peek().kind == "EOF":
                cleanup = CommandAction(_unquote(self.advance().text))
                break
            events.append(self.event())
        if not events:
            raise ScriptError(self.path, self.tok.line, "the script has no events")
        return Script(self.path, events, options, init, cleanup)

    def event(self) -> Event:
        start = self.tok
        time = self.time()
        action = self.action()
        ev = Event(start.line, time, action)
        outbound = isinstance(action, PacketAction) and action.direction == ">"
        if time.kind is TimeKind.ANY and not outbound:
            raise ScriptError(self.path, start.line, "event time * can only be used with outbound packets")
        if time.kind in (TimeKind.ABSOLUTE_RANGE, TimeKind.RELATIVE_RANGE):
            if not outbound:
                raise ScriptError(self.path, start.line, "event time range can only be used with outbound packets")
            assert time.end_usecs is not None
            if time.end_usecs < time.usecs:
                raise ScriptError(self.path, start.line, "time range is backwards")
        return ev

    def seconds(self) -> int:
        t = self.tok
        if t.kind not in ("INT", "FLOAT"):
            raise self.error("expected a time in seconds")
        if t.text.startswith("-"):
            raise self.error("negative time")
        self.advance()
        return round(float(t.text) * 1_000_000)

    def time(self) -> TimeSpec:
        if self.is_punct("*"):
            self.advance()
            return TimeSpec(TimeKind.ANY)
        if self.is_punct("+"):
            self.advance()
            usecs = self.seconds()
            if self.is_punct("~"):
                self.advance()
                self.expect_punct("+", "(a relative range is written +a~+b)")
                return TimeSpec(TimeKind.RELATIVE_RANGE, usecs, self.seconds())
            return TimeSpec(TimeKind.RELATIVE, usecs)
        if self.tok.kind in ("INT", "FLOAT"):
            usecs = self.seconds()
            if self.is_punct("~"):
                self.advance()
                return TimeSpec(TimeKind.ABSOLUTE_RANGE, usecs, self.seconds())
            return TimeSpec(TimeKind.ABSOLUTE, usecs)
        raise self.error("expected an event time (0.1, +0.1, *, or a range a~b)")

    def action(self) -> Action:
        t = self.tok
        if t.kind == "PUNCT" and t.text in "<>":
            return self.packet()
        if t.kind == "BACKQUOTE":
            return CommandAction(_unquote(self.advance().text))
        if t.kind == "CODE":
            return CodeAction(self.advance().text[2:-2])
        if t.kind in ("WORD", "ELLIPSIS"):
            return self.syscall()
        raise self.error("expected a packet (< or >), a system call, a `command` or %{ code }%")

    # -- packets -------------------------------------------------------------------
    def packet(self) -> PacketAction:
        direction = self.advance().text
        if self.is_punct("(") or self.is_punct("["):
            raise self.error("IP-level checks (tos, ecn, ttl, flowlabel) are not supported by tcpstack script")
        if self.tok.kind == "WORD" and self.tok.text in ("ipv4", "ipv6", "udp", "icmp", "gre", "mpls"):
            raise self.error(f"{self.tok.text} packets are not supported by tcpstack script (TCP only)")
        src_port = dst_port = None
        if self.tok.kind == "INT" and self.is_punct(">", self.peek()):
            src_port = self.expect_int("source port", 0, 0xFFFF)
            self.advance()
            dst_port = self.expect_int("destination port", 0, 0xFFFF)
        flags_tok = self.tok
        flags_text = self.flags()
        flags = 0
        for ch in flags_text:
            if ch not in FLAG_BITS:
                raise self.error(f"unknown TCP flag {ch!r} in {flags_text!r} (flags: F S R P . U E W A)", flags_tok)
            flags |= FLAG_BITS[ch]
        seq_tok = self.tok
        start = self.expect_int("start sequence number")
        self.expect_punct(":", "in start:end(length)")
        end = self.expect_int("end sequence number")
        self.expect_punct("(", "in start:end(length)")
        length = self.expect_int("payload length", 0, 0xFFFF)
        self.expect_punct(")", "in start:end(length)")
        if end != start + length:
            raise self.error("inconsistent TCP sequence numbers and payload size", seq_tok)
        ack = 0
        win: int | None = None
        urg = 0
        if self.tok.kind == "WORD" and self.tok.text == "ack":
            self.advance()
            ack = self.expect_int("ack sequence number")
        if self.tok.kind == "WORD" and self.tok.text == "win":
            self.advance()
            win = self.expect_int("TCP window", 0, 0xFFFF)
        if self.tok.kind == "WORD" and self.tok.text == "urg":
            self.advance()
            urg = self.expect_int("urgent pointer", 0, 0xFFFF)
        options: list[OptSpec] | None = []
        if self.is_punct("<"):
            options = self.tcp_options()
        if direction == "<":
            if win is None:
                raise self.error("window must be specified for inbound packets (win N)", flags_tok)
            if options is None:
                raise self.error("<...> for TCP options can only be used with outbound packets", flags_tok)
        if options:
            size = sum(o.size() for o in options)
            if size % 4:
                raise self.error(
                    f"TCP options are not padded correctly to a multiple of 4 bytes: {size % 4} excess bytes",
                    flags_tok,
                )
            if size > 40:
                raise self.error(f"TCP options too long: {size} bytes (at most 40)", flags_tok)
        return PacketAction(direction, flags, flags_text, start, end, length, ack, win, urg, options, src_port, dst_port)

    def flags(self) -> str:
        t = self.tok
        if t.kind == "WORD":
            self.advance()
            text = t.text
            if self.is_punct("."):
                self.advance()
                text += "."
            return text
        if self.is_punct("."):
            self.advance()
            return "."
        if self.is_punct("-"):
            self.advance()
            return ""
        raise self.error("expected TCP flags (S, S., ., P., F., R, R., - for none)")

    def tcp_options(self) -> list[OptSpec] | None:
        self.expect_punct("<")
        if self.tok.kind == "ELLIPSIS":
            self.advance()
            self.expect_punct(">", "after <...")
            return None
        opts = [self.tcp_option()]
        while self.is_punct(","):
            self.advance()
            opts.append(self.tcp_option())
        self.expect_punct(">", "to end the TCP options")
        return opts

    def tcp_option(self) -> OptSpec:
        t = self.tok
        if t.kind != "WORD":
            raise self.error("expected a TCP option (nop, eol, mss N, wscale N, sackOK, sack a:b, TS val X ecr Y)")
        name = t.text
        self.advance()
        if name in ("nop", "eol", "sackOK"):
            return OptSpec(name)
        if name == "mss":
            return OptSpec(name, self.expect_int("mss value", 0, 0xFFFF))
        if name == "wscale":
            return OptSpec(name, self.expect_int("window scale shift count", 0, 0xFF))
        if name == "sack":
            blocks = []
            while self.tok.kind in ("INT", "HEX") and self.is_punct(":", self.peek()):
                left = self.expect_int("SACK left edge")
                self.advance()
                right = self.expect_int("SACK right edge")
                blocks.append((left, right))
            if not blocks:
                raise self.error("expected SACK blocks (sack 1001:2001 ...)")
            if len(blocks) > 4:
                raise self.error("at most 4 SACK blocks fit in the TCP header")
            return OptSpec(name, blocks)
        if name == "TS":
            self.expect_word("val")
            val = self.expect_int("TS val")
            self.expect_word("ecr")
            ecr = self.expect_int("TS ecr")
            return OptSpec(name, (val, ecr))
        if name == "kind":  # tcpstack extension: an arbitrary option, "kind 30 0x0102"
            kind = self.expect_int("option kind", 0, 255)
            data = b""
            if self.tok.kind == "HEX":
                h = self.advance().text[2:]
                data = bytes.fromhex(h if len(h) % 2 == 0 else "0" + h)
            return OptSpec("raw", (kind, data))
        raise self.error(f"TCP option {name!r} is not supported by tcpstack script", t)

    # -- system calls --------------------------------------------------------------
    def syscall(self) -> SyscallAction:
        end_usecs = None
        if self.tok.kind == "ELLIPSIS":
            self.advance()
            end_usecs = self.seconds()
        if self.tok.kind != "WORD":
            raise self.error("expected a system call name")
        name = self.advance().text
        self.expect_punct("(", f"after {name}")
        args: list[Expr] = []
        if not self.is_punct(")"):
            args = self.expr_list(")")
        self.expect_punct(")", f"to close the arguments of {name}")
        self.expect_punct("=", f"and the expected result of {name}")
        result = self.expr()
        errno = None
        note = None
        if self.tok.kind == "WORD":
            errno = self.advance().text
        if self.is_punct("("):
            note = self.note()
        return SyscallAction(name, args, result, errno, note, end_usecs)

    def note(self) -> str:
        self.expect_punct("(")
        depth = 1
        words: list[str] = []
        while True:
            t = self.tok
            if t.kind == "EOF":
                raise self.error("unterminated (note)")
            if self.is_punct("("):
                depth += 1
            elif self.is_punct(")"):
                depth -= 1
                if depth == 0:
                    self.advance()
                    return " ".join(words)
            words.append(t.text)
            self.advance()

    def expr_list(self, close: str) -> list[Expr]:
        items = [self.expr()]
        while self.is_punct(","):
            self.advance()
            if self.is_punct(close):  # a trailing comma
                break
            items.append(self.expr())
        return items

    def expr(self) -> Expr:
        line = self.tok.line
        lhs = self.primary()
        if self.is_punct("=") and isinstance(lhs, WordExpr | CallExpr):
            self.advance()
            return BinaryExpr("=", lhs, self.expr(), line=line)
        while self.is_punct("|"):
            self.advance()
            lhs = BinaryExpr("|", lhs, self.primary(), line=line)
        return lhs

    def primary(self) -> Expr:
        t = self.tok
        line = t.line
        if t.kind == "ELLIPSIS":
            self.advance()
            return EllipsisExpr(line=line)
        if t.kind == "INT":
            self.advance()
            return IntExpr(int(t.text), line=line)
        if t.kind == "HEX":
            self.advance()
            return IntExpr(int(t.text, 16), line=line)
        if t.kind == "STRING":
            s = ""
            while self.tok.kind == "STRING":
                s += _unescape(self.advance().text[1:-1])
            if self.tok.kind == "ELLIPSIS":
                self.advance()
            return StringExpr(s, line=line)
        if t.kind == "WORD":
            self.advance()
            if self.is_punct("("):
                self.advance()
                args: list[Expr] = []
                if not self.is_punct(")"):
                    args = self.expr_list(")")
                self.expect_punct(")", f"to close {t.text}(...)")
                return CallExpr(t.text, args, line=line)
            return WordExpr(t.text, line=line)
        if self.is_punct("["):
            self.advance()
            items: list[Expr] = []
            if not self.is_punct("]"):
                items = self.expr_list("]")
            self.expect_punct("]")
            return ListExpr(items, line=line)
        if self.is_punct("{"):
            self.advance()
            items = []
            if not self.is_punct("}"):
                items = self.expr_list("}")
            self.expect_punct("}")
            return BracedExpr(items, line=line)
        raise self.error("expected an expression")


def _unquote(text: str) -> str:
    return text[1:-1]


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), s)
