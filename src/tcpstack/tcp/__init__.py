"""The sans-I/O TCP engine (RFC 9293).  No clocks, sockets, threads or asyncio:
every input is a call carrying ``now`` (µs), every output is collected."""

from .config import Config
from .connection import Connection
from .events import Event
from .isn import FixedIsn, Rfc6528Isn
from .listener import Listener
from .mib import Mib
from .stack import Stack
from .state import State

__all__ = ["Config", "Connection", "Event", "FixedIsn", "Listener", "Mib", "Rfc6528Isn", "Stack", "State"]
