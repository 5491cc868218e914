"""Signed URLs of local storage, the pure part (API.md §8.3): the signature and the key
id. Keys and verification are the service's (``services/url_signing.py``); local storage
needs only something that signs, :class:`UrlSigning`.

``signature`` = hex HMAC-SHA256 over ``"<METHOD>\\n<file_ref>\\n<expires>"``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

KEY_ID_HEX_CHARS = 12

__all__ = ["KEY_ID_HEX_CHARS", "SignedParams", "UrlSigning", "key_id", "signature_for"]


def key_id(secret: bytes) -> str:
    """A public fingerprint of a key (not usable to recover it)."""
    return hashlib.sha256(b"task-framework-kid\n" + secret).hexdigest()[:KEY_ID_HEX_CHARS]


def signature_for(secret: bytes, method: str, file_ref: str, expires: int) -> str:
    message = f"{method}\n{file_ref}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedParams:
    expires: int
    signature: str
    kid: str

    def query(self) -> str:
        return f"expires={self.expires}&signature={self.signature}&kid={self.kid}"


class UrlSigning(Protocol):
    """What local storage needs to issue a signed URL (``services.url_signing.UrlSigner``)."""

    async def sign(self, method: str, file_ref: str, *, expires_in: int) -> SignedParams: ...
