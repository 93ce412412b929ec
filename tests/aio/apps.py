"""Plain asyncio stream applications, shared by the simulator and kernel tests.

Nothing here imports tcpstack: an application receives the module whose
``open_connection``/``start_server`` it uses (``asyncio`` itself, or
``tcpstack.asyncio``) and is otherwise ordinary stdlib asyncio code. That is
the claim under test: the same code runs on the kernel, on tcpstack over a TUN
device, and on tcpstack in the simulator in virtual time.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Line mode until a line 'BULK\\n', then echoes raw bytes until EOF."""
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line == b"BULK\n":
                break
            writer.write(line.upper())
            await writer.drain()
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    finally:
        writer.close()
        await writer.wait_closed()


async def echo_client(
    streams: Any, host: str, port: int, payload: bytes, *, pause: float = 30.0, **kw: Any
) -> dict[str, Any]:
    """Talks to echo_handler: three lines, a `pause`-second sleep, then the payload
    in bulk (written by one task, read back by another), half-close, EOF."""
    reader, writer = await streams.open_connection(host, port, **kw)
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {
        "peername": writer.get_extra_info("peername"),
        "sockname": writer.get_extra_info("sockname"),
    }
    replies = []
    for word in (b"alpha", b"beta", b"gamma"):
        writer.write(word + b"\n")
        replies.append(await reader.readline())
    out["replies"] = replies
    t0 = loop.time()
    await asyncio.sleep(pause)
    out["slept"] = loop.time() - t0
    writer.write(b"BULK\n")

    async def send() -> None:
        view = memoryview(payload)
        for i in range(0, len(payload), 50_000):
            writer.write(view[i : i + 50_000])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    await sender
    out["echoed"] = n
    out["sha256"] = h.hexdigest()
    writer.close()
    await writer.wait_closed()
    return out


async def echo_handler_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes bytes until EOF, then closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()
