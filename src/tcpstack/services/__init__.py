"""Classic small services, written on the asyncio streams API.

Each service is a plain asyncio stream handler ``async def handle(reader,
writer)``: it runs unchanged on the kernel (``asyncio.start_server``), on
tcpstack over a TUN device (``tcpstack up --serve NAME:PORT``), and in the
simulator in virtual time (:mod:`tcpstack.sim.vloop`).

========  ============  ==============================================
name      default port  what
========  ============  ==============================================
echo      7             RFC 862: sends back what it receives
discard   9             RFC 863: reads and throws away
chargen   19            RFC 864: the 72-character rotating lines
http      80            HTTP/1.1 GET/HEAD of files, ``/bytes/N``
========  ============  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import chargen, discard, echo, http

__all__ = ["SERVICES", "Service", "ServiceSpec", "parse_spec", "start_service"]

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Service:
    name: str
    default_port: int
    summary: str
    make_handler: Callable[..., Handler]


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("echo", 7, "RFC 862: sends back what it receives", echo.make_handler),
        Service("discard", 9, "RFC 863: reads and throws away", discard.make_handler),
        Service("chargen", 19, "RFC 864: 72-character rotating lines", chargen.make_handler),
        Service("http", 80, "HTTP/1.1 GET/HEAD of files, /bytes/N", http.make_handler),
    )
}


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}:{self.port}"


def parse_spec(text: str) -> ServiceSpec:
    """``NAME:PORT`` (or ``NAME`` for the service's well-known port)."""
    name, sep, port_text = text.partition(":")
    name = name.strip().lower()
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r} in {text!r}: choose from {', '.join(SERVICES)}")
    if not sep:
        return ServiceSpec(name, SERVICES[name].default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"bad port {port_text!r} in {text!r}: expected NAME:PORT, e.g. echo:7"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range 1-65535 in {text!r}")
    return ServiceSpec(name, port)


async def start_service(
    spec: ServiceSpec, *, stack: Any = None, host: str | None = None, **options: Any
) -> Any:
    """Start ``spec`` on tcpstack (``tcpstack.asyncio.start_server``); returns the Server."""
    from ..api.aio import start_server

    handler = SERVICES[spec.name].make_handler(**options)
    return await start_server(handler, host, spec.port, stack=stack)
