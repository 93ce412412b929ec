"""A small HTTP/1.1 server (RFC 9110, RFC 9112) for trying the stack with curl.

What it serves:

- ``GET``/``HEAD`` of files under a root directory (``--root DIR``);
  a directory serves its ``index.html``, or else a listing. Paths are
  percent-decoded, ``..`` segments are refused (400) and a path that resolves
  outside the root (a symlink) is not found (404): no path traversal.
- ``/bytes/N``: a body of exactly N bytes (0 <= N <= 2^40) streamed with flow
  control. **The pattern: byte i of the body (from 0) is i mod 256**, i.e.
  ``bytes(range(256))`` repeated and cut at N, so a client can check it
  (:func:`pattern_sha256`).
- ``/`` without a root: a short page saying what is served.

Protocol: persistent connections (HTTP/1.1 default; HTTP/1.0 with
``Connection: keep-alive``), requests handled in order (pipelining works),
``Content-Length`` on every response, ``Connection: close`` honoured (the
response says so and the server closes after it). Errors have small text
bodies: 400 (malformed request, missing Host in HTTP/1.1, traversal), 404,
405 (with ``Allow: GET, HEAD``), 413, 431, 501 (request bodies with
Transfer-Encoding), 505. An idle connection is closed after ``idle_timeout``
seconds. Request bodies with Content-Length are read and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import html
import mimetypes
import os
import posixpath
import re
import stat
import urllib.parse
from collections.abc import Callable
from typing import Any

__all__ = ["HttpService", "make_handler", "pattern", "pattern_sha256"]

SERVER = "tcpstack"
MAX_LINE = 8192
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY = 1 << 20
MAX_PATTERN = 1 << 40
FILE_CHUNK = 256 * 1024

_PATTERN_BLOCK = bytes(range(256)) * (FILE_CHUNK // 256)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


def pattern(n: int) -> bytes:
    """The first ``n`` bytes of ``/bytes/N``'s body: byte i is i mod 256."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def pattern_sha256(n: int) -> str:
    """sha256 hex digest of ``/bytes/n``'s body, computed in O(1) memory."""
    h = hashlib.sha256()
    block = _PATTERN_BLOCK
    full, rest = divmod(n, len(block))
    for _ in range(full):
        h.update(block)
    h.update(block[:rest])
    return h.hexdigest()


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    __slots__ = ("method", "target", "version", "headers")

    def __init__(
        self, method: str, target: str, version: tuple[int, int], headers: dict[str, str]
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if "close" in tokens:
            return False
        if self.version >= (1, 1):
            return True
        return "keep-alive" in tokens


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request head (and its Content-Length body, discarded); None at a clean EOF."""
    line = b""
    for _ in range(4):  # RFC 9112 §2.2: ignore empty lines before the request line
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                return None
            raise BadRequest(400, "incomplete request line") from None
        except asyncio.LimitOverrunError:
            raise BadRequest(400, "request line too long") from None
        if line.strip():
            break
    else:
        return None
    if len(line) > MAX_LINE:
        raise BadRequest(400, "request line too long")
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise BadRequest(400, "malformed request line")
    m = _VERSION.fullmatch(parts[2])
    if m is None:
        raise BadRequest(400, "malformed HTTP version")
    version = (int(m.group(1)), int(m.group(2)))
    if version[0] != 1:
        raise BadRequest(505, f"HTTP/{version[0]}.{version[1]} is not supported (HTTP/1.x only)")
    headers: dict[str, str] = {}
    total = 0
    for _ in range(MAX_HEADERS + 1):
        try:
            h = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise BadRequest(400, "incomplete header section") from None
        except asyncio.LimitOverrunError:
            raise BadRequest(431, "header line too long") from None
        total += len(h)
        if total > MAX_HEADER_BYTES:
            raise BadRequest(431, "header section too large")
        h = h.rstrip(b"\r\n")
        if not h:
            break
        name, sep, value = h.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise BadRequest(400, "malformed header field")
        key = name.decode("ascii").lower()
        val = value.strip().decode("latin-1")
        if key in headers:
            if key in ("content-length", "host"):
                raise BadRequest(400, f"duplicate {key} header")
            headers[key] += ", " + val
        else:
            headers[key] = val
    else:
        raise BadRequest(431, f"more than {MAX_HEADERS} header fields")
    if version >= (1, 1) and "host" not in headers:
        raise BadRequest(400, "HTTP/1.1 request without Host")  # RFC 9112 §3.2
    if "transfer-encoding" in headers:
        raise BadRequest(501, "request bodies with Transfer-Encoding are not supported")
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest(400, "bad Content-Length")
        n = int(length)
        if n > MAX_BODY:
            raise BadRequest(413, f"request body over {MAX_BODY} bytes")
        try:
            await reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise BadRequest(400, "incomplete request body") from None
    return Request(parts[0].decode("ascii"), parts[1].decode("latin-1"), version, headers)


class HttpService:
    """The handler: ``await service(reader, writer)`` serves one connection."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        idle_timeout: float = 60.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = os.path.realpath(root) if root is not None else None
        if self.root is not None and not os.path.isdir(self.root):
            raise NotADirectoryError(f"http root {root!r} is not a directory")
        self.idle_timeout = idle_timeout
        self.log = log
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    req = await asyncio.wait_for(read_request(reader), self.idle_timeout)
                except TimeoutError:
                    break
                except BadRequest as exc:
                    await self._error(writer, exc.status, exc.message, head=False, keep=False)
                    self._log(peer, "-", exc.status, 0)
                    break
                if req is None:
                    break
                self.requests += 1
                keep = await self._respond(req, writer, peer)
                if not keep:
                    break
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await writer.wait_closed()

    def _log(self, peer: Any, what: str, status: int, size: int) -> None:
        if self.log is not None:
            host = peer[0] if peer else "-"
            self.log(f"{host} {what} {status} {size}")

    # -- responses ------------------------------------------------------------
    @staticmethod
    def _head(
        status: int, headers: list[tuple[str, str]], keep: bool, version: tuple[int, int]
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Server: {SERVER}",
        ]
        lines += [f"{k}: {v}" for k, v in headers]
        if not keep:
            lines.append("Connection: close")
        elif version < (1, 1):
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        *,
        head: bool,
        keep: bool,
        extra: list[tuple[str, str]] | None = None,
        version: tuple[int, int] = (1, 1),
    ) -> None:
        body = f"{status} {_REASONS.get(status, '')}: {message}\n".encode()
        hdrs = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        writer.write(
            self._head(status, hdrs + (extra or []), keep, version) + (b"" if head else body)
        )
        await writer.drain()

    async def _respond(self, req: Request, writer: asyncio.StreamWriter, peer: Any) -> bool:
        keep = req.keep_alive
        head = req.method == "HEAD"
        what = f'"{req.method} {req.target} HTTP/{req.version[0]}.{req.version[1]}"'
        if req.method not in ("GET", "HEAD"):
            await self._error(
                writer,
                405,
                f"{req.method} is not allowed here",
                head=False,
                keep=keep,
                extra=[("Allow", "GET, HEAD")],
                version=req.version,
            )
            self._log(peer, what, 405, 0)
            return keep
        try:
            path = self._path(req.target)
        except BadRequest as exc:
            await self._error(
                writer, exc.status, exc.message, head=head, keep=keep, version=req.version
            )
            self._log(peer, what, exc.status, 0)
            return keep
        m = re.fullmatch(r"/bytes/(\d{1,13})", path)
        if m is not None and int(m.group(1)) <= MAX_PATTERN:
            n = int(m.group(1))
            await self._send_pattern(writer, n, head, keep, req.version)
            self._log(peer, what, 200, n)
            return keep
        if self.root is None:
            if path == "/":
                body = self._index_page().encode()
                await self._send_bytes(
                    writer, body, "text/html; charset=utf-8", head, keep, req.version
                )
                self._log(peer, what, 200, len(body))
                return keep
            await self._error(
                writer, 404, f"{path} not found", head=head, keep=keep, version=req.version
            )
            self._log(peer, what, 404, 0)
            return keep
        fs = self._resolve(path)
        if fs is not None and os.path.isdir(fs):
            if not path.endswith("/"):
                fs = None  # a directory without its slash: keep it simple, not found
            else:
                index = os.path.join(fs, "index.html")
                if os.path.isfile(index):
                    fs = index
                else:
                    body = self._listing(path, fs).encode()
                    await self._send_bytes(
                        writer, body, "text/html; charset=utf-8", head, keep, req.version
                    )
                    self._log(peer, what, 200, len(body))
                    return keep
        if fs is None or not os.path.isfile(fs):
            await self._error(
                writer, 404, f"{path} not found", head=head, keep=keep, version=req.version
            )
            self._log(peer, what, 404, 0)
            return keep
        size = await self._send_file(writer, fs, head, keep, req.version)
        self._log(peer, what, 200, size)
        return keep

    @staticmethod
    def _path(target: str) -> str:
        if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 §3.2.2)
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        if not target.startswith("/"):
            raise BadRequest(400, "request target must start with /")
        raw = target.split("?", 1)[0].split("#", 1)[0]
        try:
            path = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(400, "path is not UTF-8 after percent-decoding") from None
        if "\0" in path or "\\" in path:
            raise BadRequest(400, "invalid character in path")
        if any(seg == ".." for seg in path.split("/")):
            raise BadRequest(400, "'..' in path (no path traversal)")
        return path

    def _resolve(self, path: str) -> str | None:
        assert self.root is not None
        rel = posixpath.normpath(path.lstrip("/")) if path.strip("/") else ""
        full = os.path.realpath(os.path.join(self.root, rel))
        if full != self.root and not full.startswith(self.root + os.sep):
            return None  # a symlink leading out of the root
        return full

    def _index_page(self) -> str:
        return (
            "<!doctype html><title>tcpstack</title><h1>tcpstack HTTP service</h1>"
            "<p>This page came over a TCP written in user-space Python.</p>"
            '<p><a href="/bytes/1000000">/bytes/N</a> streams N bytes; byte i is i mod 256.</p>'
            "<p>Start <code>tcpstack up --root DIR</code> to serve files.</p>\n"
        )

    @staticmethod
    def _listing(path: str, fs: str) -> str:
        try:
            names = sorted(os.listdir(fs))
        except OSError:
            names = []
        items = []
        for name in names:
            slash = "/" if os.path.isdir(os.path.join(fs, name)) else ""
            href = urllib.parse.quote(name) + slash
            items.append(f'<li><a href="{href}">{html.escape(name)}{slash}</a></li>')
        title = html.escape(path)
        return f"<!doctype html><title>{title}</title><h1>{title}</h1><ul>{''.join(items)}</ul>\n"

    async def _send_bytes(
        self,
        writer: asyncio.StreamWriter,
        body: bytes,
        ctype: str,
        head: bool,
        keep: bool,
        version: tuple[int, int],
    ) -> None:
        hdrs = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        writer.write(self._head(200, hdrs, keep, version) + (b"" if head else body))
        await writer.drain()

    async def _send_pattern(
        self, writer: asyncio.StreamWriter, n: int, head: bool, keep: bool, version: tuple[int, int]
    ) -> None:
        hdrs = [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))]
        writer.write(self._head(200, hdrs, keep, version))
        if head:
            await writer.drain()
            return
        block = _PATTERN_BLOCK  # a multiple of 256 bytes: every chunk starts at i mod 256 == 0
        left = n
        while left >= len(block):
            writer.write(block)
            left -= len(block)
            await writer.drain()
        if left:
            writer.write(block[:left])
        await writer.drain()

    async def _send_file(
        self,
        writer: asyncio.StreamWriter,
        fs: str,
        head: bool,
        keep: bool,
        version: tuple[int, int],
    ) -> int:
        with open(fs, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConnectionError("not a regular file")
            ctype = mimetypes.guess_type(fs)[0] or "application/octet-stream"
            if ctype.startswith("text/"):
                ctype += "; charset=utf-8"
            hdrs = [
                ("Content-Type", ctype),
                ("Content-Length", str(st.st_size)),
                ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
            ]
            writer.write(self._head(200, hdrs, keep, version))
            if head:
                await writer.drain()
                return st.st_size
            left = st.st_size
            while left > 0:
                chunk = f.read(min(FILE_CHUNK, left))
                if not chunk:
                    raise ConnectionError(
                        f"{fs} shrank while being sent"
                    )  # Content-Length now wrong
                writer.write(chunk)
                left -= len(chunk)
                await writer.drain()
            return st.st_size


def make_handler(root: str | os.PathLike[str] | None = None, **options: Any) -> HttpService:
    return HttpService(root, **options)
