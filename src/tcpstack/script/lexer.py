"""Tokens of the packetdrill script language.

Like packetdrill's flex lexer, each position takes the longest match, and
among equally long matches the earlier rule wins (so ``0x2`` is a hex
integer, not a word).  ``//`` and ``/* */`` comments and whitespace are
skipped; ``%{ ... }%`` is one CODE token; a backquoted string is one
BACKQUOTE token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import ScriptError

# (kind, regex) in priority order for equally long matches.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("SPACE", re.compile(r"[ \t\r\n]+")),
    ("COMMENT", re.compile(r"//[^\n]*")),
    ("COMMENT", re.compile(r"/\*.*?\*/", re.S)),
    ("CODE", re.compile(r"%\{.*?\}%", re.S)),
    ("BACKQUOTE", re.compile(r"`(?:\\.|[^`])*`", re.S)),
    ("STRING", re.compile(r'"(?:\\.|[^"])*"')),
    ("ELLIPSIS", re.compile(r"\.\.\.")),
    # A whole option line's flag: --name or --name=value (packetdrill's lexer takes
    # the value up to the next blank, so --ip_version=ipv4-mapped-ipv6 is one value).
    ("OPTION", re.compile(r"--[a-zA-Z0-9_]+(?:=[^ \t\r\n]+)?")),
    ("IPV4", re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")),
    ("HEX", re.compile(r"0x[0-9a-fA-F]+")),
    ("FLOAT", re.compile(r"-?[0-9]*\.[0-9]+")),
    ("INT", re.compile(r"-?[0-9]+")),
    ("WORD", re.compile(r"[a-zA-Z0-9_]+")),
    ("PUNCT", re.compile(r"[^ \t\r\n]")),
]


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    line: int

    def __repr__(self) -> str:
        return f"{self.kind}({self.text!r}@{self.line})"


def tokenize(text: str, path: str = "<script>") -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        best_kind = ""
        best_end = pos
        for kind, rx in _RULES:
            m = rx.match(text, pos)
            if m is not None and m.end() > best_end:
                best_kind, best_end = kind, m.end()
        if best_end == pos:  # an unterminated comment, code block or quote
            raise ScriptError(path, line, f"unterminated token starting {text[pos:pos + 20]!r}")
        chunk = text[pos:best_end]
        if best_kind == "PUNCT" and chunk == "%" and text.startswith("%{", pos):
            raise ScriptError(path, line, "unterminated %{ code block (missing }%)")
        if best_kind == "PUNCT" and chunk in "`\"":
            raise ScriptError(path, line, f"unterminated {chunk} quote")
        if best_kind not in ("SPACE", "COMMENT"):
            tokens.append(Token(best_kind, chunk, line))
        line += chunk.count("\n")
        pos = best_end
    tokens.append(Token("EOF", "", line))
    return tokens
