"""The SQLAlchemy implementations of the store interfaces (SQLite and PostgreSQL).

One module per aggregate; dialect differences are handled in :mod:`._dialect`. Services
never import this package: ``app.py`` (and the CLI) build these over a ``Database`` and
hand them to the services as the interfaces of ``task_framework.store``.
"""

from task_framework.store.sql.credentials import SqlVaultStore
from task_framework.store.sql.deployments import SqlDeploymentStore
from task_framework.store.sql.files import SqlFileStore
from task_framework.store.sql.keys import SqlKeyStore
from task_framework.store.sql.schedules import SqlScheduleStore
from task_framework.store.sql.sessions import SqlUiSessionStore
from task_framework.store.sql.settings import SqlSettingsStore
from task_framework.store.sql.stats import SqlStatsStore
from task_framework.store.sql.webhooks import SqlWebhookStore

__all__ = [
    "SqlDeploymentStore",
    "SqlFileStore",
    "SqlKeyStore",
    "SqlScheduleStore",
    "SqlSettingsStore",
    "SqlStatsStore",
    "SqlUiSessionStore",
    "SqlVaultStore",
    "SqlWebhookStore",
]
