"""The Redis errors the agent raises itself: it speaks RESP on its own (bounded reads, EOF seen at once).

The agent builds only these four; they used to be redis-py's classes, which made the whole client a
dependency for an exception namespace (and left unreachable branches for classes nothing raised).
"""

from __future__ import annotations


class RedisError(Exception):
    """Anything wrong on a Redis connection that is not an OS error."""


class ResponseError(RedisError):
    """An error reply (``-ERR …``, ``-LOADING …``); the message is the reply's text."""


class InvalidResponse(RedisError):
    """Bytes that are not RESP2, or a reply that does not answer the command."""


class ConnectionFailure(RedisError):
    """The connection ended or could not be used; the message says how."""
