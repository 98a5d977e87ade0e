"""What Redis' replies and errors mean for readiness: a reason from the fixed set and a secret-free detail.

Kept apart from the connection code so the mapping (each entry from a real failure mode, docs/design.md
"Redis facts") is read and tested on its own. A ``refused`` detail names the address it was met at
(``connection refused (10.0.0.3:6379)``) when the connection code located the failure (:class:`AtPeer`):
host and port only, never a credential.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import agent.checks.redis.errors as rx
from agent.checks.dns import LookupTimeout
from agent.checks.redis.protocol import ReplyTooLarge
from agent.core.model import Reason, ReasonedError

# Error-reply prefixes: the reply's first word names the condition.
_PREFIXES: tuple[tuple[str, Reason], ...] = (
    ("LOADING", Reason.LOADING),
    ("BUSY", Reason.BUSY),
    ("MASTERDOWN", Reason.MASTER_LINK_DOWN),
    ("MISCONF", Reason.READONLY),  # persistence failing: the server refuses writes (and PING)
    ("READONLY", Reason.READONLY),
    ("OOM", Reason.OOM),
    ("NOREPLICAS", Reason.NOREPLICAS),
    ("CLUSTERDOWN", Reason.CLUSTER_DOWN),
    ("TRYAGAIN", Reason.CLUSTER_DOWN),
    ("NOAUTH", Reason.AUTH),
    ("WRONGPASS", Reason.AUTH),
    ("NOPERM", Reason.AUTH),
    ("DENIED", Reason.AUTH),
    ("ERR max number of clients", Reason.MAXCLIENTS),
    ("ERR AUTH", Reason.AUTH),
    ("ERR invalid password", Reason.AUTH),
    ("ERR Client sent AUTH", Reason.AUTH),
    ("invalid username-password", Reason.AUTH),
    ("Authentication required", Reason.AUTH),
)


class AtPeer:
    """A connection failure that knows where it was met: ``peer`` is ``host:port`` (no credentials)."""

    peer: str | None = None


class RefusedAt(ConnectionRefusedError, AtPeer):
    """A connection refused by ``peer`` (still a ``ConnectionRefusedError``: "nothing listens")."""


class ResetAt(ConnectionResetError, AtPeer):
    """A connection reset by ``peer`` while connecting."""


class FailedAt(OSError, AtPeer):
    """Any other OS error connecting to ``peer`` (no route, network unreachable)."""


_LOCATED: dict[type[OSError], type[OSError]] = {ConnectionRefusedError: RefusedAt, ConnectionResetError: ResetAt,
                                                OSError: FailedAt}


def at_peer(exc: OSError, peer: str) -> OSError | None:
    """``exc`` located at ``peer`` (raise it ``from exc``), or None for an error that is not about the peer's
    socket (TLS, DNS, a timeout: those keep their own type and words)."""
    located = _LOCATED.get(type(exc))
    if located is None:
        return None
    error = located(*exc.args)
    assert isinstance(error, AtPeer)
    error.peer = peer
    return error


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors behind it (causes, then contexts), outermost first."""
    chain = [exc]
    for _ in range(5):
        inner = chain[-1].__cause__ or chain[-1].__context__
        if inner is None:
            break
        chain.append(inner)
    return chain


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost OS-level error behind a wrapper, if any."""
    return _chain(exc)[-1]


def _by_class(exc: BaseException) -> tuple[Reason, str] | None:
    """Errors that carry their own reason (an IAM token, a TLS file), a timeout, an oversized reply."""
    if isinstance(exc, ReasonedError):
        return exc.reason, exc.described
    if isinstance(exc, TimeoutError | socket.timeout):
        return Reason.TIMEOUT, "no answer within the check timeout"
    if isinstance(exc, ReplyTooLarge):
        return Reason.PROTOCOL, str(exc)
    return None


def _by_root(root: BaseException) -> tuple[Reason, str] | None:
    """OS-level causes under a connection error."""
    if isinstance(root, ssl.SSLCertVerificationError):
        message = str(root.verify_message or "").rstrip(".")
        if "mismatch" in message:
            return Reason.TLS, (f"TLS: {message} (connecting by IP: set tls_server_name to a name the "
                                "certificate carries, or redis_tls_skip_hostname_check)")
        return Reason.TLS, f"TLS: certificate verify failed ({message or 'untrusted'})"
    if isinstance(root, ssl.SSLError):
        return Reason.TLS, f"TLS error: {root.reason or type(root).__name__}"
    if isinstance(root, LookupTimeout):
        return Reason.DNS, "no answer from the resolver within the check timeout"
    if isinstance(root, socket.gaierror):
        return Reason.DNS, "host name does not resolve"
    if isinstance(root, TimeoutError | socket.timeout):
        return Reason.TIMEOUT, "no answer within the check timeout"
    if isinstance(root, ConnectionRefusedError):
        return Reason.REFUSED, "connection refused"
    if isinstance(root, ConnectionResetError | BrokenPipeError):
        return Reason.REFUSED, "connection reset"
    return None


def classify(exc: BaseException) -> tuple[Reason, str]:
    """Map an exception from a check to a reason and a short, secret-free detail; a ``refused`` detail names
    the address when the failure was located there (``connection refused (10.0.0.3:6379)``)."""
    reason, detail = _classify(exc)
    if reason is Reason.REFUSED:
        peer = next((e.peer for e in _chain(exc) if isinstance(e, AtPeer) and e.peer), None)
        if peer is not None:
            return reason, f"{detail} ({peer})"
    return reason, detail


def _classify(exc: BaseException) -> tuple[Reason, str]:
    known = _by_class(exc)
    if known is not None:
        return known
    text = str(exc).strip()
    if isinstance(exc, rx.ResponseError) or (isinstance(exc, rx.ConnectionFailure) and text[:1].isupper()):
        for prefix, reason in _PREFIXES:
            if text.startswith(prefix):
                return reason, text.splitlines()[0][:120]
    if isinstance(exc, rx.ResponseError):
        return Reason.ERROR, text.splitlines()[0][:120] if text else "error reply"
    known = _by_root(_root_cause(exc))
    if known is not None:
        return known
    if isinstance(exc, rx.InvalidResponse):
        return Reason.PROTOCOL, "not a Redis protocol reply"
    lowered = text.lower()
    if "ssl" in lowered or "certificate" in lowered:
        return Reason.TLS, "TLS handshake failed"
    if "closed" in lowered:
        return Reason.REFUSED, "connection closed by the server"
    if isinstance(exc, OSError | rx.ConnectionFailure):
        return Reason.REFUSED, "connection failed"
    return Reason.ERROR, type(exc).__name__


def parse_info(raw: Any) -> dict[str, str]:
    """``INFO`` text into a flat ``field → value`` mapping (sections and comments dropped)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def unavailable(reply: object) -> bool:
    """An error reply that means "you may not run this command here" (renamed away, or not in the ACL user's
    rights): the agent stops sending that diagnostic and relies on what it may run."""
    if not isinstance(reply, rx.ResponseError):
        return False
    text = str(reply)
    return text.startswith(("NOPERM", "ERR unknown command", "ERR unknown subcommand"))


def judge_role(reply: object, require_master: bool) -> tuple[Reason, str] | None:
    """Failure implied by a ``ROLE`` reply, or None when it says "usable"."""
    if not isinstance(reply, list) or not reply or not isinstance(reply[0], bytes):
        raise rx.InvalidResponse("ROLE did not answer a role")
    if reply[0] == b"slave":
        if len(reply) < 4 or reply[3] != b"connected":
            return Reason.MASTER_LINK_DOWN, "replica's master link is down"
        if require_master:
            return Reason.READONLY, "a replica, and this check requires the master"
    return None


def judge_info(info: dict[str, str], require_master: bool) -> tuple[Reason, str] | None:
    """Failure implied by INFO fields, or None when they say "usable"."""
    if info.get("loading") == "1":
        return Reason.LOADING, "INFO says loading:1"
    if info.get("async_loading") == "1":
        return Reason.LOADING, "INFO says async_loading:1"
    role = info.get("role")
    if role == "slave":
        if info.get("master_link_status") != "up":
            return Reason.MASTER_LINK_DOWN, "replica's master link is down"
        if require_master:
            return Reason.READONLY, "a replica, and this check requires the master"
    return None  # cluster_state is not in INFO: CLUSTER INFO is judged apart (agent/checks/redis/cluster.py)
