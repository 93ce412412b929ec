"""``from tcpstack import socket``: the socket-like API, under the stdlib's name.

Everything of :mod:`tcpstack.api.socket` is here, so code written for the
standard ``socket`` module ports by changing one import::

    from tcpstack import socket
    s = socket.create_connection(("198.18.0.1", 80), driver=host)
"""

from .api.socket import *  # noqa: F403
from .api.socket import __all__ as _api_all
from .api.socket import __doc__ as _api_doc

__all__ = list(_api_all)
__doc__ = (__doc__ or "") + "\n" + (_api_doc or "")
