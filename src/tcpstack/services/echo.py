"""Echo (RFC 862): "Once a connection is established any data received is sent back.
This continues until the calling user terminates the connection." Flow control
is end to end: while the peer does not read, we stop reading too (``drain``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

CHUNK = 64 * 1024


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break  # the peer's FIN: everything has been echoed, close our side too
            writer.write(data)
            await writer.drain()
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await writer.wait_closed()


def make_handler(**_options: Any) -> Any:
    return handle
