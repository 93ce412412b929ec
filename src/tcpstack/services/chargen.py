"""Character generator (RFC 864), TCP: "Once a connection is established a stream
of data is sent out the connection (and any data received is thrown away). This
continues until the calling user terminates the connection."

The data is the RFC's suggested pattern: the 95 printable ASCII characters
(0x20-0x7E) in order, in lines of 72 characters, each line starting one
character further along than the previous one, each ended by CR LF. Line ``i``
(from 0) is ``PRINTABLE[(i + k) % 95] for k in range(72)``; the stream repeats
every 95 lines (7030 bytes). :func:`lines` gives the first bytes of it, so a
test can compare what it received.

The service stops when writing fails (the peer reset or closed the
connection); a peer that only half-closes keeps receiving, as with inetd.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

PRINTABLE = bytes(range(0x20, 0x7F))  # the 95 printable ASCII characters
LINE_CHARS = 72
PERIOD = len(PRINTABLE)  # lines before the pattern repeats

CYCLE = b"".join(
    bytes(PRINTABLE[(i + k) % PERIOD] for k in range(LINE_CHARS)) + b"\r\n" for i in range(PERIOD)
)
# What one write carries: whole cycles, about 64 KiB.
BLOCK = CYCLE * (65536 // len(CYCLE))


def lines(nbytes: int) -> bytes:
    """The first ``nbytes`` bytes of the chargen stream."""
    reps = nbytes // len(CYCLE) + 1
    return (CYCLE * reps)[:nbytes]


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, TimeoutError):
        while await reader.read(65536):
            pass


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sink = asyncio.ensure_future(_discard(reader))
    try:
        while not writer.is_closing():
            writer.write(BLOCK)
            await writer.drain()
    except (ConnectionError, TimeoutError):
        pass
    finally:
        sink.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError, asyncio.CancelledError):
            await sink
        with contextlib.suppress(ConnectionError, TimeoutError):
            await writer.wait_closed()


def make_handler(**_options: Any) -> Any:
    return handle
