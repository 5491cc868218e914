"""Webhook signatures (API.md §12.5): both header styles over the exact body bytes.

* ``X-Task-Signature: t=<unix>,v1=<hex>``: HMAC-SHA256 over ``b"<t>." + body``, keyed
  with the UTF-8 text of the secret after ``whsec_``.
* Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature:
  v1,<base64>`` = HMAC-SHA256 over ``b"<id>.<t>." + body``, keyed with the
  base64-decoded secret after ``whsec_``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret


def _secret_text(secret: str) -> str:
    return secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret


def task_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Task-Signature`` value."""
    key = _secret_text(secret).encode()
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def standard_signature(secret: str, message_id: str, body: bytes, timestamp: int) -> str:
    """The Standard Webhooks ``webhook-signature`` value."""
    key = base64.b64decode(_secret_text(secret))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_headers(secret: str, event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "X-Task-Signature": task_signature(secret, body, timestamp),
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, event_id, body, timestamp),
    }


__all__ = ["signature_headers", "standard_signature", "task_signature"]
