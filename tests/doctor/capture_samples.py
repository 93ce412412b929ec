"""Regenerate tests/doctor/data/snapshot from the real kernel (run as root).

    .venv/bin/python tests/doctor/capture_samples.py

Creates a network namespace, runs a child that puts sockets in known states
(IPv4 and IPv6, see SCENARIO), and saves the namespace with
``tcpstack doctor --netns NS --save-proc tests/doctor/data/snapshot``.
The unit tests then assert exact values read from that capture; after
regenerating, update the expected values in test_doctor_procnet.py/test_doctor_snapshot.py.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEST = HERE / "data" / "snapshot"

SCENARIO = r"""
import ctypes, os, socket, struct, sys, time
ctypes.CDLL(None).prctl(15, b"tsd-sample", 0, 0, 0)
keep = []
v4 = socket.socket(); v4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
v4.bind(("0.0.0.0", 8080)); v4.listen(16)
v6 = socket.socket(socket.AF_INET6); v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
v6.bind(("::", 8443)); v6.listen(16)
# 2 established IPv4 pairs, 3 bytes left unread on the first server side
for i in range(2):
    c = socket.create_connection(("127.0.0.1", 8080)); s, _ = v4.accept()
    if i == 0:
        c.sendall(b"abc")
    keep += [c, s]
# 2 IPv6: server closes first -> client CLOSE-WAIT, server orphaned FIN-WAIT-2
for _ in range(2):
    c = socket.create_connection(("::1", 8443)); s, _ = v6.accept(); s.close(); keep.append(c)
# 1 IPv4 client to the dual-stack IPv6 listener (server side is ::ffff:127.0.0.1)
c = socket.create_connection(("127.0.0.1", 8443)); s, _ = v6.accept(); keep += [c, s]
# 3 TIME-WAIT on the client side
for _ in range(3):
    c = socket.create_connection(("127.0.0.1", 8080)); s, _ = v4.accept(); c.close()
    s.settimeout(5); assert s.recv(1) == b""; s.close()
# 1 connection completed but never accept()ed (last: accept() is FIFO)
keep.append(socket.create_connection(("127.0.0.1", 8080)))
time.sleep(0.2)
# 1 SYN-SENT to an address routed into lo but not local: the SYN goes nowhere
ss = socket.socket(); ss.setblocking(False); ss.connect_ex(("198.18.0.99", 9)); keep.append(ss)
# 1 SYN-RECEIVED: a raw SYN from 198.18.0.99; our SYN-ACK to it goes nowhere
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
src, dst = socket.inet_aton("198.18.0.99"), socket.inet_aton("198.18.0.1")
tcp = struct.pack("!HHIIBBHHH", 40000, 8080, 12345, 0, 5 << 4, 0x02, 65535, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
rs = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
rs.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
rs.sendto(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src, dst) + tcp, ("198.18.0.1", 0))
time.sleep(0.2)
print("READY", os.getpid(), flush=True)
sys.stdin.read()
"""


def main() -> int:
    if os.geteuid() != 0:
        print("capture_samples.py needs root (network namespaces)", file=sys.stderr)
        return 1
    ns = f"tcpstack-doctor-capture-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    child = None
    try:
        for cmd in (
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "addr", "add", "198.18.0.1/32", "dev", "lo"],
            ["ip", "-n", ns, "route", "add", "198.18.0.99/32", "dev", "lo"],
        ):
            subprocess.run(cmd, check=True, timeout=10)
        child = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SCENARIO],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 20)
        line = child.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"scenario did not start: {line!r}")
        if DEST.exists():
            shutil.rmtree(DEST)
        env = dict(os.environ, PYTHONPATH=str(HERE.parents[1] / "src"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpstack.cli.doctor_cmd",
                "--netns",
                ns,
                "--save-proc",
                str(DEST),
                "--plain",
            ],
            check=True,
            timeout=30,
            env=env,
        )
        print(line.strip(), "->", DEST)
    finally:
        if child is not None:
            child.kill()
            child.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], timeout=10)
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
