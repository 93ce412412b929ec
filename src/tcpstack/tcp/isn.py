"""Initial sequence numbers (RFC 6528) and per-connection timestamp offsets.

RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey),
where M is a 4-microsecond timer and F a keyed pseudorandom function.  We use
keyed BLAKE2b for F.  Both generators are parameters of the Stack, so tests
pass fixed ones (DESIGN: injectable randomness).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

Key = tuple[str, int, str, int]
IsnGenerator = Callable[[Key, int], int]


class Rfc6528Isn:
    """ISN = (now_us / 4) + F(4-tuple, secret) mod 2**32."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def __call__(self, key: Key, now: int) -> int:
        h = hashlib.blake2b(repr(key).encode(), key=self.secret[:64], digest_size=4).digest()
        return ((now >> 2) + int.from_bytes(h, "big")) & 0xFFFFFFFF


class FixedIsn:
    """A fixed ISN for tests and scripts (e.g. near 2**32 to cross the wrap)."""

    def __init__(self, value: int) -> None:
        self.value = value & 0xFFFFFFFF

    def __call__(self, key: Key, now: int) -> int:
        return self.value


def keyed_offset(secret: bytes, key: Key) -> int:
    """A per-connection timestamp offset (as Linux randomises TSval per connection)."""
    h = hashlib.blake2b(b"ts" + repr(key).encode(), key=secret[:64], digest_size=4).digest()
    return int.from_bytes(h, "big")
