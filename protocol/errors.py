"""The two kinds of protocol error: the peer misbehaved, or we misused the API.

A ``RemoteProtocolError`` comes from bytes a peer sent us: the node drops the message, logs the
reason and lowers the sender's reputation; it never crashes. A ``LocalProtocolError`` is our own
bug or a caller's mistake and should surface loudly.
"""


class HearthError(Exception):
    """Base class of every error Hearth raises on purpose."""


class RemoteProtocolError(HearthError):
    """A peer sent something we must refuse. ``reason`` is a short stable code for logs/metrics."""

    reason = "remote-protocol"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(RemoteProtocolError):
    reason = "malformed"


class OversizeError(RemoteProtocolError):
    reason = "oversize"


class UnknownTypeError(RemoteProtocolError):
    reason = "unknown-type"


class UnsupportedVersionError(RemoteProtocolError):
    reason = "unsupported-version"


class NonCanonicalError(RemoteProtocolError):
    reason = "non-canonical"


class SignatureError(RemoteProtocolError):
    reason = "bad-signature"


class ExpiredError(RemoteProtocolError):
    reason = "expired"


class ReplayError(RemoteProtocolError):
    reason = "replay"


class LocalProtocolError(HearthError):
    """We (or a caller of ours) used the protocol API wrongly."""
