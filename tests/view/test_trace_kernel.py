"""`tcpstack trace` on captures of the Linux kernel talking to itself.

Two namespaces joined by a veth pair; plain Python programs connect,
transfer and close (client first; server first; an abort with RST; a
refused connection) while tcpdump (classic pcap: Linux cooked v2 on "any",
Ethernet with nanosecond timestamps) and tshark (pcapng, and pcap) capture on
each side.  The states ``trace`` infers for both ends must be what the kernel
went through, as the kernel itself reports it (the inet_sock_set_state
tracepoint and ``ss``, see kernel.py), and the same from every capture.

Needs root (namespaces).  Like the interop tests, these FAIL rather than skip
without it, unless TCPSTACK_ALLOW_SKIP_INTEROP=1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from tcpstack.cli.main import main
from tcpstack.view.infer import CLIENT, SERVER, TcpConnection, load

from ..kernel_env import require_kernel
from . import kernel
from .kernel import CLIENT_ADDR, SERVER_ADDR, Conversation, converse, tcpdump, tshark


@pytest.fixture(autouse=True)
def _need_kernel() -> None:
    require_kernel("kernel captures", tun=False, tools=("ip", "tcpdump", "tshark", "ss"))


ACTIVE_CLOSER = ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]
PASSIVE_SERVER = ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]
SERVER_CLOSER = ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"]
PASSIVE_CLIENT = ["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]

EXPECTED = {
    "client-closes": (ACTIVE_CLOSER, PASSIVE_SERVER),
    "server-closes": (PASSIVE_CLIENT, SERVER_CLOSER),
    "rst": (["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSED"],
            ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSED"]),
    "refused": (["CLOSED", "SYN-SENT", "CLOSED"], ["CLOSED"]),
}

PORTS = {"client-closes": 8101, "server-closes": 8102, "rst": 8103, "refused": 8104}


# Per mode: capture file -> (namespace side, command); both formats in every mode.
def _captures(mode: str, d: Path) -> dict[str, tuple[str, list[str], bytes]]:
    if mode == "client-closes":
        specs = {"c-any.pcap": ("client", tcpdump(d / "c-any.pcap")),
                 "s-veth.pcapng": ("server", tshark(d / "s-veth.pcapng", "veth-s"))}
    elif mode == "server-closes":
        specs = {"c-veth-ns.pcap": ("client", tcpdump(d / "c-veth-ns.pcap", "veth-c", nano=True)),
                 "s-any.pcapng": ("server", tshark(d / "s-any.pcapng", "any"))}
    elif mode == "rst":
        specs = {"c-veth.pcapng": ("client", tshark(d / "c-veth.pcapng", "veth-c")),
                 "s-any.pcap": ("server", tcpdump(d / "s-any.pcap"))}
    else:
        specs = {"c-any.pcap": ("client", tcpdump(d / "c-any.pcap")),
                 "s-veth.pcap": ("server", tshark(d / "s-veth.pcap", "veth-s", fmt="pcap"))}
    return {name: (side, cmd, ready) for name, (side, (cmd, ready)) in specs.items()}


_conversations: dict[str, Conversation] = {}


def conversation(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Conversation:
    """Each conversation runs once per session, whichever test needs it first."""
    if mode not in _conversations:
        d = tmp_path_factory.mktemp(mode)
        _conversations[mode] = converse(d, mode, PORTS[mode], _captures(mode, d))
    return _conversations[mode]


def the_connection(path: Path) -> TcpConnection:
    cap, conns = load(path)
    assert cap.packets, f"{path.name}: no TCP segment captured; capture tools said: {kernel.LOG}"
    assert len(conns) == 1, f"{path.name}: {len(conns)} connections"
    c = conns[0]
    assert c.client[0] == CLIENT_ADDR
    assert c.server[0] == SERVER_ADDR and c.server[1] in PORTS.values()
    return c


def kernel_sequences(conv: Conversation, conn: TcpConnection) -> tuple[list[str], list[str]] | None:
    """What the kernel reports each end went through (None if the tracepoint is unavailable)."""
    if not conv.kernel.available:
        warnings.warn(f"kernel state tracepoint unavailable ({conv.kernel.reason}): "
                      "checking against RFC 9293's expected sequences only", stacklevel=2)
        return None
    cport, sport = conn.client[1], conn.server[1]
    client = conv.kernel.sequence(cport, sport, sport)
    # The listener's child starts from the listener's state (LISTEN); for a
    # refused connection there is no server socket at all: CLOSED.
    server = conv.kernel.sequence(sport, cport, sport) or ["CLOSED"]
    # A socket handed to a TIME-WAIT mini-socket shows CLOSE in the tracepoint.
    c_ep = f"{CLIENT_ADDR}:{cport}"
    s_ep = f"{SERVER_ADDR}:{sport}"
    if (c_ep, s_ep) in conv.time_wait["client"] and client[-1] == "CLOSED":
        client[-1] = "TIME-WAIT"
    if (s_ep, c_ep) in conv.time_wait["server"] and server[-1] == "CLOSED":
        server[-1] = "TIME-WAIT"
    return client, server


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_inferred_states_are_what_the_kernel_went_through(
    mode: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    conv = conversation(mode, tmp_path_factory)
    want_client, want_server = EXPECTED[mode]
    assert len(conv.files) == 2
    for name, path in conv.files.items():
        conn = the_connection(path)
        got = (conn.state_sequence(CLIENT), conn.state_sequence(SERVER))
        assert got == (want_client, want_server), f"{name}: inferred {got}"
        seen_by_kernel = kernel_sequences(conv, conn)
        if seen_by_kernel is not None:
            assert got == seen_by_kernel, f"{name}: kernel went through {seen_by_kernel}"
        assert conn.handshake_seen


def test_formats_and_link_types(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The captures really are of the kinds claimed (so the reader is exercised on each)."""
    kinds = {}
    for mode in EXPECTED:
        for name, path in conversation(mode, tmp_path_factory).files.items():
            head = path.read_bytes()[:24]
            if head[:4] == b"\x0a\x0d\x0d\x0a":
                kinds[name] = "pcapng"
            else:
                magic = int.from_bytes(head[:4], "little")
                kinds[name] = {0xA1B2C3D4: "pcap", 0xA1B23C4D: "pcap-ns"}[magic]
                kinds[name] += f"/{int.from_bytes(head[20:24], 'little') & 0xFFFF}"
    assert "pcap-ns/1" in kinds.values()  # Ethernet, nanosecond timestamps
    assert "pcap/276" in kinds.values()  # Linux cooked v2 (tcpdump -i any)
    assert "pcapng" in kinds.values()
    assert "pcap/1" in kinds.values() or "pcap/276" in kinds.values()


def test_time_wait_is_left_where_the_kernel_keeps_it(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Independent of the tracepoint: ss shows TIME-WAIT on the end trace says is in it."""
    for mode, side in (("client-closes", "client"), ("server-closes", "server")):
        conv = conversation(mode, tmp_path_factory)
        conn = the_connection(next(iter(conv.files.values())))
        c_ep = f"{CLIENT_ADDR}:{conn.client[1]}"
        s_ep = f"{SERVER_ADDR}:{conn.server[1]}"
        want = (c_ep, s_ep) if side == "client" else (s_ep, c_ep)
        assert want in conv.time_wait[side], (mode, conv.time_wait)
        other = "server" if side == "client" else "client"
        assert not conv.time_wait[other]


def test_trace_cli_json_on_a_kernel_capture(tmp_path_factory: pytest.TempPathFactory,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    conv = conversation("client-closes", tmp_path_factory)
    path = conv.files["s-veth.pcapng"]
    assert main(["trace", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (c,) = doc["connections"]
    assert c["state_sequence"] == {"client": ACTIVE_CLOSER, "server": PASSIVE_SERVER}
    assert c["segments"][0]["flags"] == "S" and c["segments"][0]["seq"] == 0
    sent = sum(s["len"] for s in c["segments"] if s["from"] == "client")
    assert sent == 5000
    # Text ladder: every state appears on its side.
    assert main(["trace", str(path)]) == 0
    text = capsys.readouterr().out
    for state in ACTIVE_CLOSER + PASSIVE_SERVER:
        assert state in text
    assert "|-- [S] seq=0" in text
    # The picture: a veth round trip is microseconds, so arrows get the fixed slant.
    svg = path.with_name("kernel.svg")
    assert main(["trace", str(path), "--svg", str(svg)]) == 0
    capsys.readouterr()
    picture = svg.read_text()
    assert "fixed slant (round trip" in picture
    for state in set(ACTIVE_CLOSER + PASSIVE_SERVER):
        assert f'class="state">{state}</text>' in picture


@pytest.mark.skipif(shutil.which("mergecap") is None, reason="mergecap not installed")
def test_two_capture_points_merged(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Client-side and server-side captures merged: each segment seen twice becomes one
    with a send and a receive time, and the states are unchanged."""
    conv = conversation("client-closes", tmp_path_factory)
    merged = conv.files["c-any.pcap"].with_name("merged.pcapng")
    subprocess.run(["mergecap", "-w", str(merged), str(conv.files["c-any.pcap"]),
                    str(conv.files["s-veth.pcapng"])], check=True, timeout=30)
    cap, (conn,) = load(merged)
    single = the_connection(conv.files["c-any.pcap"])
    assert cap.merged == len(single.segments)
    assert len(conn.segments) == len(single.segments)
    assert all(s.recv_time is not None and s.recv_time >= s.time for s in conn.segments)
    assert conn.state_sequence(CLIENT) == ACTIVE_CLOSER
    assert conn.state_sequence(SERVER) == PASSIVE_SERVER
