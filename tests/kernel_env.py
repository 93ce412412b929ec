"""One gate for every test that needs the real kernel: root, /dev/net/tun and
iproute2 (and, for some, more tools).

Where something is missing the test FAILS with the reason -- CI runs as root,
and an interop test that skipped silently would let CI pass without proving
anything against the kernel -- unless TCPSTACK_ALLOW_SKIP_INTEROP=1 turns the
failures into skips (for a developer's unprivileged run).
"""

from __future__ import annotations

import os
import shutil

import pytest

ALLOW_SKIP_ENV = "TCPSTACK_ALLOW_SKIP_INTEROP"


def unavailable(*, tun: bool = True, tools: tuple[str, ...] = ()) -> str | None:
    """Why the kernel cannot be used here (None: it can)."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append(f"not running as root (euid {os.geteuid()})")
    if tun and not os.path.exists("/dev/net/tun"):
        reasons.append("/dev/net/tun is missing (modprobe tun, or --device /dev/net/tun)")
    if tun and shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        reasons.append("the `ip` command (iproute2) is not installed")
    for tool in tools:
        if shutil.which(tool) is None:
            reasons.append(f"`{tool}` is not installed (make deps-debian)")
    return "; ".join(reasons) or None


def require_kernel(what: str, *, tun: bool = True, tools: tuple[str, ...] = ()) -> None:
    """Fail ``what`` with the reason when the kernel cannot be used (skip it
    instead when TCPSTACK_ALLOW_SKIP_INTEROP=1)."""
    reason = unavailable(tun=tun, tools=tools)
    if reason is None:
        return
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(f"{what} skipped ({ALLOW_SKIP_ENV}=1): {reason}")
    pytest.fail(
        f"{what} cannot run: {reason}. CI runs as root; set {ALLOW_SKIP_ENV}=1 to skip instead of failing.",
        pytrace=False,
    )
