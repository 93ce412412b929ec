"""Two sans-I/O stacks joined by hand, with sockets in known states.

``Lab`` moves every packet one way after a fixed delay (``HOP`` µs), so RTTs
and timers are exact.  ``known_sockets()`` builds, on the server 198.18.0.2:

====================================  =====================================
socket                                how
====================================  =====================================
LISTEN *:80 (backlog 128)             listen(80)
LISTEN *:7 (backlog 4), 1 queued      listen(7, backlog=4); a client connects, nobody accepts
ESTAB 198.18.0.2:80 <- :40001         accepted; the client sent b"hello" (Recv-Q 5)
CLOSE-WAIT 198.18.0.2:80 <- :40002    accepted; the client shut down its side
TIME-WAIT 198.18.0.2:80 <- :40003     accepted; the server closed first, the client too
SYN-RECV 198.18.0.2:80 <- :40004      a SYN arrived; the SYN-ACK never reached the client
ESTAB 198.18.0.2:7 <- :40005          the one in :7's accept queue
====================================  =====================================
"""

from __future__ import annotations

from tcpstack.tcp import Config, FixedIsn, Stack

SERVER = "198.18.0.2"
CLIENT = "198.18.0.1"
HOP = 5_000  # µs each way: an RTT of 10 ms
T0 = 1_000_000


class Lab:
    def __init__(self, config: Config | None = None) -> None:
        self.server = Stack(
            [SERVER],
            config or Config(),
            isn=FixedIsn(1000),
            seed=1,
            ts_offset=lambda key: 0,
            name="server",
        )
        self.client = Stack(
            [CLIENT], Config(), isn=FixedIsn(5000), seed=2, ts_offset=lambda key: 0, name="client"
        )
        self.now = T0

    def settle(self, rounds: int = 20, drop_to_client: bool = False) -> None:
        """Deliver packets both ways, one hop at a time, until both are quiet."""
        for _ in range(rounds):
            # Copies: transmit() hands back its live (empty) queue when nothing is queued.
            to_server = list(self.client.transmit())
            to_client = list(self.server.transmit())
            if not to_server and not to_client:
                return
            self.now += HOP
            for p in to_server:
                self.server.receive(p, self.now)
            if not drop_to_client:
                for p in to_client:
                    self.client.receive(p, self.now)
        raise AssertionError("the stacks did not settle")


def known_sockets() -> Lab:
    lab = Lab()
    s, c = lab.server, lab.client
    web = s.listen(80, lab.now)
    small = s.listen(7, lab.now, backlog=4)

    def accepted(port: int, lport: int):
        cc = c.connect(SERVER, port, lab.now, local_port=lport)
        lab.settle()
        return cc, (web.accept() if port == 80 else None)

    c1, s1 = accepted(80, 40001)
    c1.send(b"hello", lab.now)
    lab.settle()

    c2, s2 = accepted(80, 40002)
    c2.shutdown(lab.now)
    lab.settle()

    c3, s3 = accepted(80, 40003)
    s3.close(lab.now)
    lab.settle()
    c3.close(lab.now)
    lab.settle()

    c.connect(SERVER, 80, lab.now, local_port=40004)
    lab.settle(drop_to_client=True)

    accepted(7, 40005)
    assert small.accept_queue
    lab.keep = (c1, s1, c2, s2, c3, s3)  # type: ignore[attr-defined]
    return lab


def many_connections(n: int) -> Lab:
    """A server with ``n`` accepted ESTABLISHED connections on port 80 (opened in batches)."""
    lab = Lab()
    lst = lab.server.listen(80, lab.now, backlog=4096)
    lab.keep = []  # type: ignore[attr-defined]
    for start in range(0, n, 500):
        for i in range(start, min(n, start + 500)):
            lab.keep.append(lab.client.connect(SERVER, 80, lab.now, local_port=20000 + i))  # type: ignore[attr-defined]
        lab.settle()
        while (c := lst.accept()) is not None:
            lab.keep.append(c)  # type: ignore[attr-defined]
    return lab
