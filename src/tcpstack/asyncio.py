"""tcpstack's asyncio streams: ``from tcpstack import asyncio as tasyncio``.

The two functions an asyncio stream application needs, with the standard
library's signatures and the standard library's ``StreamReader`` /
``StreamWriter``, over tcpstack instead of the kernel::

    reader, writer = await tasyncio.open_connection("198.18.0.1", 7)
    server = await tasyncio.start_server(handle, "198.18.0.2", 7)

Each also takes ``stack=`` (an :class:`~tcpstack.runtime.aio_driver.AioDriver`,
or in the simulator under :mod:`tcpstack.sim.vloop` a host's
:class:`~tcpstack.tcp.Stack`); without it, the stack chosen with
:func:`use_stack` or :func:`set_default_stack` is used. The protocol-level
``create_connection`` / ``create_server`` are here too. TLS is the
standard library's, layered on the tcpstack transport (``ssl=``).

``TcpstackEventLoop`` / ``SimEventLoop`` make even the stdlib's own
``asyncio.open_connection``/``asyncio.start_server`` use tcpstack. See
:mod:`tcpstack.api.aio` for how the transport maps onto the engine.
"""

from .api.aio import (
    DEFAULT_LIMIT,
    Server,
    SimEventLoop,
    TcpstackEventLoop,
    TcpTransport,
    create_connection,
    create_server,
    get_stack,
    open_connection,
    set_default_stack,
    start_server,
    use_stack,
)

__all__ = [
    "DEFAULT_LIMIT",
    "Server",
    "SimEventLoop",
    "TcpTransport",
    "TcpstackEventLoop",
    "create_connection",
    "create_server",
    "get_stack",
    "open_connection",
    "set_default_stack",
    "start_server",
    "use_stack",
]
