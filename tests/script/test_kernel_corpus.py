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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.script.corpus import run_one

from ..kernel_env import require_kernel

CORPUS = Path(__file__).resolve().parents[1] / "scripts"
SCRIPTS = sorted(CORPUS.rglob("*.pkt"))
ATTEMPTS = 3

pytestmark = pytest.mark.interop


@pytest.fixture(autouse=True)
def _kernel_environment() -> Iterator[None]:
    require_kernel("the kernel corpus")
    yield
    leftover = sorted(p.name for p in Path("/run/netns").glob(f"tcpstack-s{os.getpid()}-*"))
    assert not leftover, f"namespaces left behind: {leftover}"


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
