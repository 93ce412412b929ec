"""tcpstack: a real TCP (RFC 9293) in user-space Python.

Layers (imports point downward only): cli > api > runtime/sim > tcp > wire.
See docs/architecture.md.
"""

__version__ = "0.1.0"
