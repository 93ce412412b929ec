"""An asyncio application that knows nothing of tcpstack: it calls the standard
library's ``asyncio.start_server`` and ``asyncio.open_connection`` itself.
Under ``tcpstack.asyncio.SimEventLoop`` (or ``TcpstackEventLoop``) its TCP is
tcpstack's; under a plain event loop it is the kernel's."""

import asyncio

THINK = 30.0  # seconds the server thinks before answering


async def handle(reader, writer):
    name = (await reader.readline()).strip()
    await asyncio.sleep(THINK)
    writer.write(b"hello, " + name + b"\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def serve(host, port, started):
    server = await asyncio.start_server(handle, host, port)
    started.set_result(server.sockets[0].getsockname())
    async with server:
        await server.serve_forever()


async def ask(host, port, name):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(name + b"\n")
    answer = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return answer, writer.get_extra_info("peername")
