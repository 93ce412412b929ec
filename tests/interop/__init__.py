"""Interop tests: the Linux kernel as the peer (see conftest.py)."""
