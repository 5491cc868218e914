"""What every store interface shares: the transaction handle.

A store method that must run inside a transaction its caller composes with other work
(the executor's claim reads the cluster limit in its own transaction) takes a
:data:`Tx`. To services it is opaque: they receive one from whatever runs the
transaction (``Database.tx`` today) and hand it back to the store unchanged. The
SQLAlchemy implementations take it to be a ``sqlalchemy.Connection``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Tx"]


class Tx(Protocol):
    """An open transaction of the records store; opaque outside ``store/``."""
