"""The stdlib's TLS over tcpstack transports (StreamWriter.start_tls / ssl=), in the simulator.

The transport supports asyncio.BufferedProtocol (the stdlib's SSLProtocol is
one) and is marked start_tls-compatible, so TLS is the standard library's own.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tcpstack import asyncio as tasyncio
from tcpstack.sim import vloop

from .conftest import SERVER4, VIRTUAL_LIMIT, SimPair


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tcpstack.test",
            "-addext",
            "subjectAltName=DNS:tcpstack.test,IP:198.18.0.2",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key, crt


async def upper_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Upper-cases lines until 'QUIT' (TLS in asyncio has no half-close, so no write_eof)."""
    try:
        while (line := await reader.readline()) not in (b"", b"QUIT\n"):
            writer.write(line.upper())
            await writer.drain()
    finally:
        writer.close()


def test_tls_over_the_simulator(pair: SimPair, cert: tuple[Path, Path]) -> None:
    key, crt = cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)
    client_ctx = ssl.create_default_context(cafile=str(crt))
    big = b"x" * 200_000 + b"\n"

    async def main() -> tuple[list[bytes], str, Any]:
        server = await tasyncio.start_server(
            upper_lines, SERVER4, 443, stack=pair.server, ssl=server_ctx, limit=1 << 20
        )
        with tasyncio.use_stack(pair.client):
            # the certificate names IP 198.18.0.2: server_hostname defaults to the host, as in the stdlib
            reader, writer = await tasyncio.open_connection(
                SERVER4, 443, ssl=client_ctx, limit=1 << 20
            )
            got = []
            for line in (b"alpha\n", big, b"omega\n"):
                writer.write(line)
                await writer.drain()
                got.append(await reader.readline())
            version = writer.get_extra_info("ssl_object").version()
            writer.write(b"QUIT\n")
            got.append(await reader.read())
            writer.close()
            # hostname checking is the stdlib's: a name not in the certificate fails
            try:
                await tasyncio.open_connection(
                    SERVER4, 443, ssl=client_ctx, server_hostname="other.test"
                )
                bad: Any = None
            except ssl.SSLCertVerificationError as exc:
                bad = exc
        await asyncio.sleep(1)
        server.close()
        await server.wait_closed()
        return got, version, bad

    got, version, bad = vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert got == [b"ALPHA\n", big.upper(), b"OMEGA\n", b""]
    assert version == "TLSv1.3"
    assert isinstance(bad, ssl.SSLCertVerificationError)


def test_tls_at_the_protocol_level_and_with_the_stdlib_functions(
    pair: SimPair, cert: tuple[Path, Path]
) -> None:
    """loop.create_connection(ssl=...) semantics: connection_made comes after the
    handshake, with an SSL transport; the stdlib's asyncio.open_connection(ssl=)
    works unchanged under SimEventLoop."""
    key, crt = cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)
    client_ctx = ssl.create_default_context(cafile=str(crt))
    seen: list[Any] = []

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.done = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            seen.append(transport.get_extra_info("ssl_object").version())
            transport.write(b"proto\n")

        def data_received(self, data: bytes) -> None:
            seen.append(data)
            self.done.set_result(None)

    async def main() -> bytes:
        with tasyncio.use_stack(pair.server):
            server = await asyncio.start_server(upper_lines, SERVER4, 8443, ssl=server_ctx)
        with tasyncio.use_stack(pair.client):
            loop = asyncio.get_running_loop()
            transport, proto = await loop.create_connection(
                Client, SERVER4, 8443, ssl=client_ctx, server_hostname="tcpstack.test"
            )
            await proto.done
            transport.close()
            reader, writer = await asyncio.open_connection(SERVER4, 8443, ssl=client_ctx)
            writer.write(b"stdlib\n")
            line = await reader.readline()
            writer.close()
        await asyncio.sleep(1)
        server.close()
        await server.wait_closed()
        return line

    with asyncio.Runner(loop_factory=lambda: tasyncio.SimEventLoop(pair.net)) as runner:
        line = runner.run(main())
    assert seen == ["TLSv1.3", b"PROTO\n"]
    assert line == b"STDLIB\n"
