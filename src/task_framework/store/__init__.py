"""The records store: the port services reach records through.

The interfaces (``keys``, ``settings``, ``credentials``), their records, the transaction
handle :data:`Tx` and the errors import no SQLAlchemy; ``store.sql`` implements them.
"""

from task_framework.store.base import Tx
from task_framework.store.errors import (
    RecordNotFound,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
)

__all__ = ["RecordNotFound", "StoreError", "StoreUnavailable", "Tx", "UniqueViolation"]
