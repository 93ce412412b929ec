"""`tcpstack nc` and `tcpstack up` run by an unprivileged user fail at once with 77.

Issue #5: "without root it fails at once with a message saying what privilege
is needed".  The real command line is exec'd as uid/gid 65534 with no
capability (``setpriv``); checked: exit status 77 (EX_NOPERM), exactly one
line on stderr naming CAP_NET_ADMIN and root, within seconds, and nothing
created: no /run/netns entry for a namespace it would have made, and in a
namespace that already exists, no device.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from .kernel_peer import in_ns
from .privileges import cli_as_nobody

COMMANDS = {
    "nc-connect": ["nc", "--netns", "{ns}", "198.18.0.1", "9"],
    "nc-listen": ["nc", "--netns", "{ns}", "-l", "7000"],
    "up": ["up", "--netns", "{ns}"],
}


def _links(ns: str) -> list[str]:
    p = in_ns(ns, "ip", "-j", "link", "show", timeout=10)
    assert p.returncode == 0, p.stderr
    return sorted(link["ifname"] for link in json.loads(p.stdout))


def _assert_fails_with_77(argv: list[str]) -> str:
    t0 = time.monotonic()
    p = cli_as_nobody(*argv)
    took = time.monotonic() - t0
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 77, (p.returncode, p.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"tcpstack {argv[0]}"), lines[0]
    assert "needs CAP_NET_ADMIN (run as root" in lines[0], lines[0]
    assert p.stdout == ""
    assert took < 10, f"took {took:.1f} s: not 'at once'"
    return lines[0]


@pytest.mark.parametrize("cmd", COMMANDS, ids=list(COMMANDS))
def test_unprivileged_user_gets_77_and_nothing_is_created(cmd: str, netns_name: str) -> None:
    """The namespace does not exist: the command would create it, and may not."""
    argv = [a.format(ns=netns_name) for a in COMMANDS[cmd]]
    line = _assert_fails_with_77(argv)
    assert f"creating network namespace {netns_name!r} needs CAP_SYS_ADMIN" in line or (
        "needs CAP_NET_ADMIN and CAP_SYS_ADMIN, which this process lacks" in line), line
    assert not os.path.exists(f"/run/netns/{netns_name}")


@pytest.mark.parametrize("cmd", COMMANDS, ids=list(COMMANDS))
def test_unprivileged_user_in_an_existing_namespace_gets_77_and_adds_no_device(
        cmd: str, netns_name: str) -> None:
    """The namespace exists (root made it): the device needs CAP_NET_ADMIN (and
    entering the namespace CAP_SYS_ADMIN); the namespace is left as it was."""
    subprocess.run(["ip", "netns", "add", netns_name], check=True, timeout=10)
    before = _links(netns_name)
    argv = [a.format(ns=netns_name) for a in COMMANDS[cmd]]
    line = _assert_fails_with_77(argv)
    assert line.endswith("needs CAP_NET_ADMIN, which this process lacks") or line.endswith(
        "needs CAP_NET_ADMIN and CAP_SYS_ADMIN, which this process lacks"), line
    assert os.path.exists(f"/run/netns/{netns_name}")  # not removed either
    assert _links(netns_name) == before == ["lo"]
