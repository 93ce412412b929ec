"""The services (echo, discard, chargen, http) over tcpstack, in the simulator.

Fast and deterministic: virtual time, seeded network. A tiny HTTP client
written on the same streams API checks the server byte by byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tcpstack import asyncio as tasyncio
from tcpstack.services import SERVICES, ServiceSpec, chargen, parse_spec, start_service
from tcpstack.services.http import pattern, pattern_sha256
from tcpstack.sim import vloop

from .conftest import SERVER4, SERVER6, VIRTUAL_LIMIT, SimPair


def serve(
    pair: SimPair, specs: list[str], client: Callable[[], Coroutine[Any, Any, Any]], **opts: Any
) -> Any:
    """Start services on the server host, run ``client()`` on the client host."""

    async def main() -> Any:
        servers = []
        for text in specs:
            spec = parse_spec(text)
            o = opts if spec.name == "http" else {}
            servers.append(await start_service(spec, stack=pair.server, **o))
        try:
            with tasyncio.use_stack(pair.client):
                return await client()
        finally:
            for s in servers:
                s.close()
                s.abort_clients()

    return vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)


def test_parse_spec() -> None:
    assert parse_spec("echo:7") == ServiceSpec("echo", 7)
    assert parse_spec("HTTP:8080") == ServiceSpec("http", 8080)
    assert parse_spec("chargen") == ServiceSpec("chargen", 19)
    for bad in ("gopher:70", "echo:x", "echo:0", "echo:70000"):
        with pytest.raises(ValueError):
            parse_spec(bad)
    assert set(SERVICES) == {"echo", "discard", "chargen", "http"}


# ---------------------------------------------------------------------------- echo, discard, chargen


def test_echo_rfc862(pair: SimPair) -> None:
    data = os.urandom(700_000)

    async def client() -> tuple[bytes, bytes]:
        reader, writer = await tasyncio.open_connection(SERVER4, 7)
        writer.write(b"line one\n")
        first = await reader.readline()

        async def send() -> None:
            for i in range(0, len(data), 100_000):
                writer.write(data[i : i + 100_000])
                await writer.drain()
            writer.write_eof()

        task = asyncio.ensure_future(send())
        rest = await reader.read()  # to EOF: the server closes after echoing everything
        await task
        writer.close()
        await writer.wait_closed()
        return first, rest

    first, rest = serve(pair, ["echo:7"], client)
    assert first == b"line one\n"
    assert rest == data


def test_discard_rfc863(pair: SimPair) -> None:
    async def client() -> bytes:
        reader, writer = await tasyncio.open_connection(SERVER4, 9)
        for _ in range(10):
            writer.write(b"\xff" * 100_000)
            await writer.drain()
        writer.write_eof()
        got = await reader.read()  # nothing comes back; EOF once the server closes
        writer.close()
        return got

    assert serve(pair, ["discard:9"], client) == b""
    assert pair.server.mib.InSegs > 600


def test_chargen_rfc864_pattern(pair: SimPair) -> None:
    async def client() -> bytes:
        reader, writer = await tasyncio.open_connection(SERVER6, 19)
        data = await reader.readexactly(100_000)
        writer.close()  # unread data: a RST, which is how a chargen client hangs up
        await writer.wait_closed()
        await asyncio.sleep(1)
        return data

    data = serve(pair, ["chargen:19"], client)
    assert data == chargen.lines(100_000)
    lines = data.split(b"\r\n")
    assert all(len(line) == 72 for line in lines[:-1])
    assert lines[0] == bytes(range(32, 104))
    assert lines[1] == bytes(range(33, 105))
    assert lines[95] == lines[0]  # the pattern repeats every 95 lines
    assert len(set(lines[:95])) == 95
    assert not pair.server.conns  # the server noticed and closed


# ---------------------------------------------------------------------------- http


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


async def read_response(
    reader: asyncio.StreamReader, head: bool = False, sink: Any = None
) -> Response:
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head else int(headers["content-length"])
    if sink is None:
        return Response(status, headers, await reader.readexactly(n))
    while n:
        chunk = await reader.read(min(n, 1 << 16))
        assert chunk, "EOF before Content-Length"
        sink.update(chunk)
        n -= len(chunk)
    return Response(status, headers, b"")


async def http(
    reqs: list[bytes], host: str = SERVER4, port: int = 80, heads: list[bool] | None = None
) -> tuple[list[Response], bytes]:
    """Send the requests on one connection (pipelined), read the responses, then
    whatever follows until EOF or a 120 s idle limit (virtual time)."""
    reader, writer = await tasyncio.open_connection(host, port)
    writer.write(b"".join(reqs))
    out = []
    for i in range(len(reqs)):
        out.append(await read_response(reader, head=bool(heads and heads[i])))
    try:
        tail = await asyncio.wait_for(reader.read(), 120)
    except TimeoutError:
        tail = b"<open>"
    writer.close()
    await writer.wait_closed()
    return out, tail


def get(path: str, extra: str = "", method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_text("hello, world\n")
    (root / "sub" / "index.html").write_text("<p>sub</p>\n")
    (root / "blob.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "secret.txt").write_text("outside the root\n")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    return root


def test_http_get_head_files_and_keepalive(pair: SimPair, site: Path) -> None:
    blob = (site / "blob.bin").read_bytes()

    async def client() -> Any:
        return await http(
            [
                get("/hello.txt"),
                get("/blob.bin"),
                get("/hello.txt", method="HEAD"),
                get("/sub/"),
                get("/"),
                get("/hello.txt", "Connection: close\r\n"),
            ],
            heads=[False, False, True, False, False, False],
        )

    (r1, r2, r3, r4, r5, r6), tail = serve(pair, ["http:80"], client, root=site)
    assert (r1.status, r1.body) == (200, b"hello, world\n")
    assert r1.headers["content-type"] == "text/plain; charset=utf-8"
    assert r1.headers["content-length"] == "13"
    assert "connection" not in r1.headers  # HTTP/1.1: persistent by default
    assert r2.body == blob and r2.headers["content-type"] == "application/octet-stream"
    assert r3.status == 200 and r3.headers["content-length"] == "13" and r3.body == b""
    assert r4.body == b"<p>sub</p>\n"
    assert b"hello.txt" in r5.body and b"sub/" in r5.body  # a listing
    assert r6.headers["connection"] == "close"
    assert tail == b""  # ...and the server closed after it
    assert (
        len(pair.client.mib.nstat()) and pair.client.mib.ActiveOpens == 1
    )  # one connection for all


def test_http_bytes_pattern_sha256(pair: SimPair) -> None:
    n = 3_000_017
    h = hashlib.sha256()

    async def client() -> Any:
        reader, writer = await tasyncio.open_connection(SERVER4, 80)
        writer.write(get(f"/bytes/{n}") + get("/bytes/1000", "Connection: close\r\n"))
        r = await read_response(reader, sink=h)
        r2 = await read_response(reader)
        assert await reader.read() == b""
        writer.close()
        return r, r2

    r, r2 = serve(pair, ["http:80"], client)
    assert r.status == 200 and r.headers["content-length"] == str(n)
    assert h.hexdigest() == pattern_sha256(n) == hashlib.sha256(pattern(n)).hexdigest()
    assert r2.body == bytes(range(256)) * 3 + bytes(range(232))


def test_http_errors(pair: SimPair, site: Path) -> None:
    async def client() -> Any:
        results = []
        for raw in (
            get("/nope.txt"),
            get("/../secret.txt"),
            get("/sub/%2e%2e/%2e%2e/secret.txt"),
            get("/escape"),  # a symlink out of the root
            get("/hello.txt", method="POST", extra="Content-Length: 3\r\n") + b"abc",
            b"GET /hello.txt HTTP/1.1\r\n\r\n",  # no Host
            b"BREW /pot HTTP/1.1 extra\r\nHost: t\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
            get("/x", "Transfer-Encoding: chunked\r\n"),
        ):
            reader, writer = await tasyncio.open_connection(SERVER4, 80)
            writer.write(raw)
            r = await read_response(reader)
            try:
                tail = await asyncio.wait_for(reader.read(), 120)
            except TimeoutError:
                tail = b"<open>"
            writer.close()
            results.append((r, tail))
        return results

    res = serve(pair, ["http:80"], client, root=site)
    statuses = [r.status for r, _ in res]
    assert statuses == [404, 400, 400, 404, 405, 400, 400, 505, 501]
    for r, _ in res:
        assert 0 < len(r.body) < 200 and r.headers["content-length"] == str(len(r.body))
        assert b"outside the root" not in r.body
    assert res[4][0].headers["allow"] == "GET, HEAD"
    # a well-formed request with a 404/405 keeps the connection (idle timeout closes it at 60 s);
    # a malformed one closes it at once
    assert [t for _, t in res] == [b""] * 9
    assert all("connection" not in r.headers for r, _ in (res[0], res[4]))
    assert all(r.headers.get("connection") == "close" for r, _ in res[5:])


def test_http_idle_timeout_and_http10(pair: SimPair) -> None:
    async def client() -> Any:
        loop = asyncio.get_running_loop()
        reader, writer = await tasyncio.open_connection(SERVER4, 80)
        t0 = loop.time()
        writer.write(get("/", version="1.0"))
        r10 = await read_response(reader)
        eof10 = await reader.read()  # HTTP/1.0 without keep-alive: closed
        writer.close()
        reader, writer = await tasyncio.open_connection(SERVER4, 80)
        writer.write(get("/", "Connection: keep-alive\r\n", version="1.0"))
        r10k = await read_response(reader)
        t1 = loop.time()
        eof_idle = await reader.read()  # keep-alive: open until the 60 s idle timeout
        idle = loop.time() - t1
        writer.close()
        return r10, eof10, r10k, eof_idle, idle, t1 - t0

    r10, eof10, r10k, eof_idle, idle, first = serve(pair, ["http:80"], client)
    assert r10.status == 200 and r10.headers["connection"] == "close" and eof10 == b""
    assert r10k.headers["connection"] == "keep-alive" and eof_idle == b""
    assert idle == pytest.approx(60.0, abs=0.5)
    assert first < 1.0


def test_http_ipv6_and_index_page_without_root(pair: SimPair) -> None:
    async def client() -> Any:
        return await http([get("/", "Connection: close\r\n")], host=SERVER6, port=8080)

    (r,), tail = serve(pair, ["http:8080"], client)
    assert r.status == 200 and b"/bytes/" in r.body and tail == b""
