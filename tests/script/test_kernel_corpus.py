"""The whole corpus against the Linux kernel (``tcpstack script --kernel``).

This is what makes the corpus an oracle: every script (but the few marked
``// tcpstack-only``) must hold on Linux.  It needs root and /dev/net/tun;
without them it FAILS, unless TCPSTACK_ALLOW_SKIP_INTEROP=1 turns that into
a skip (CI runs as root and never sets it).

Real time is shared with everything else on the machine, so a script whose
only failure is a timing error is rerun (at most twice): a timing error that
does not repeat is scheduling noise, not Linux behaviour.  Each script runs
in its own namespace ``tcpstack-s<pid>-<n>``, removed afterwards.  The
runtime is about the sum of the scripts' script times (about a minute).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.script.corpus import run_one

CORPUS = Path(__file__).resolve().parents[1] / "scripts"
SCRIPTS = sorted(CORPUS.rglob("*.pkt"))
ALLOW_SKIP_ENV = "TCPSTACK_ALLOW_SKIP_INTEROP"
ATTEMPTS = 3

pytestmark = pytest.mark.interop


def _unavailable() -> str | None:
    reasons = []
    if os.geteuid() != 0:
        reasons.append(f"not running as root (euid {os.geteuid()})")
    if not os.path.exists("/dev/net/tun"):
        reasons.append("/dev/net/tun is missing")
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        reasons.append("the `ip` command (iproute2) is not installed")
    return "; ".join(reasons) or None


@pytest.fixture(autouse=True)
def _kernel_environment() -> Iterator[None]:
    reason = _unavailable()
    if reason is None:
        yield
        leftover = sorted(p.name for p in Path("/run/netns").glob(f"tcpstack-s{os.getpid()}-*"))
        assert not leftover, f"namespaces left behind: {leftover}"
        return
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(f"kernel corpus skipped ({ALLOW_SKIP_ENV}=1): {reason}")
    pytest.fail(f"the kernel corpus cannot run: {reason}. It needs root and /dev/net/tun "
                f"(CI runs as root). Set {ALLOW_SKIP_ENV}=1 to skip it instead.", pytrace=False)


def _id(p: Path) -> str:
    return str(p.relative_to(CORPUS))


@pytest.mark.parametrize("path", SCRIPTS, ids=_id)
def test_script_on_linux(path: Path) -> None:
    v = run_one(str(path), kernel=True, retries=ATTEMPTS - 1)
    if v.verdict == "skip":
        pytest.skip(f"tcpstack-only: {v.reason}")
    if not v.ok:
        pytest.fail(f"{_id(path)} does not hold on Linux ({v.attempts} attempts):\n{v.result.message}",
                    pytrace=False)
