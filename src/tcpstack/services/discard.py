"""Discard (RFC 863): "Once a connection is established any data received is thrown
away. No response is sent." The connection closes when the peer closes its side."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

CHUNK = 256 * 1024


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(CHUNK):
            pass
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await writer.wait_closed()


def make_handler(**_options: Any) -> Any:
    return handle
