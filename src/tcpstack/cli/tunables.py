"""`--set KEY=VALUE` and `--cc`: the tunable options every command shares."""

from __future__ import annotations

import argparse

from ..tcp import Config


def add_tunable_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="set a tunable (repeatable; with or without net.ipv4.), e.g. --set tcp_window_scaling=0")
    p.add_argument("--cc", choices=["newreno", "cubic"], help="congestion control (tcp_congestion_control)")


def config_from_sets(items: list[str]) -> Config:
    """A Config with each KEY=VALUE applied; a clear one-line error for a bad item."""
    cfg = Config()
    for item in items:
        if "=" not in item:
            raise SystemExit(f"tcpstack: --set takes KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            cfg.set(k, v)
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"tcpstack: {exc.args[0] if exc.args else exc}") from None
    return cfg


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = config_from_sets(args.set)
    if getattr(args, "cc", None):
        cfg.set("tcp_congestion_control", args.cc)
    return cfg
