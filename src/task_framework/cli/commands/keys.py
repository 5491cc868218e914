"""``task-framework keys …``: managed API keys, through a server or in its database.

One group serves both ways of reaching the keys. By default a command calls the server
(``/admin/api-keys``, admin key). ``--local``, ``--data-dir`` or ``--database-url`` select
direct database access instead, with the settings ``serve`` reads
(``TASK_FRAMEWORK_DATA_DIR`` / ``TASK_FRAMEWORK_DATABASE_URL``); that is how the first
admin key of a server without one is made. A database that does not exist is never
created. ``api-key …`` is the old, hidden spelling of the local commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from task_framework.cli.commands._common import (
    AllOpt,
    Column,
    Conn,
    LimitOpt,
    collect,
    emit,
    fail,
    handled,
    ident,
    out,
    print_items,
    remote,
    remote_list,
)
from task_framework.client.models import ApiKey

if TYPE_CHECKING:
    from task_framework.services.auth import KeyRing

LOCAL_PAGE_SIZE = 1000

keys_app = typer.Typer(
    help=(
        "Managed API keys: on a server (admin key), or directly in its database with "
        "--local, --data-dir or --database-url."
    ),
    no_args_is_help=True,
)
legacy_app = typer.Typer(
    help="Old spelling of `keys … --local` (database access).",
    no_args_is_help=True,
    hidden=True,
)

LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local",
        metavar="",
        help=(
            "Use the database directly instead of the server, found as `serve` finds it "
            "(TASK_FRAMEWORK_DATA_DIR / TASK_FRAMEWORK_DATABASE_URL, default ./data)"
        ),
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="Use the database in this data directory (as `serve --data-dir`); implies --local",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help="Use this database (sqlite:///... or postgresql://...); implies --local",
    ),
]
KeyIdArg = Annotated[str, typer.Argument(metavar="KEY_ID", help="Key id (apikey_…)")]
NameOpt = Annotated[str, typer.Option("--name", metavar="NAME", help="A name for the key")]
AdminOpt = Annotated[bool, typer.Option("--admin", metavar="", help="An admin key")]

KEY_COLUMNS = (
    ident("id", lambda k: k.id),
    Column("name", lambda k: k.name),
    Column("role", lambda k: k.role),
    ident("prefix", lambda k: k.prefix),
    Column("bound", lambda k: ",".join(filter(None, [k.app_id, k.user_id]))),
    Column("revoked", lambda k: k.revoked_at.isoformat() if k.revoked_at else None),
)


@dataclass(frozen=True, slots=True)
class _Database:
    """Where ``--local`` commands find the keys; ``chosen`` is False for the server."""

    local: bool
    data_dir: Path | None
    database_url: str | None

    @property
    def chosen(self) -> bool:
        return self.local or self.data_dir is not None or self.database_url is not None

    def run(self, fn: Any) -> Any:
        from task_framework.cli.local import settings_from, with_keyring

        settings = settings_from(data_dir=self.data_dir, database_url=self.database_url)
        return with_keyring(settings, fn)


def _print_created(conn: Conn, key: ApiKey) -> None:
    emit(conn, key, lambda: out.print(f"{key.id}  {key.role}  {key.name}\n{key.key}"))


def _create_local(
    db: _Database,
    *,
    name: str,
    admin: bool,
    app_id: str | None,
    user_id: str | None,
    expires_at: datetime | None,
) -> ApiKey:
    async def _create(keys: KeyRing) -> dict[str, Any]:
        return await keys.create_key(
            name=name,
            role="admin" if admin else "user",
            app_id=app_id,
            user_id=user_id,
            expires_at=expires_at,
        )

    return ApiKey.model_validate(db.run(_create))


def _list_local(db: _Database, *, include_revoked: bool) -> list[ApiKey]:
    from task_framework.store.paging import PageRequest

    async def _list(keys: KeyRing) -> Any:
        return await keys.list_keys(
            role=None,
            app_id=None,
            user_id=None,
            include_revoked=include_revoked,
            page=PageRequest(limit=LOCAL_PAGE_SIZE),
        )

    _, items = db.run(_list)
    return [ApiKey.model_validate(item) for item in items]


def _revoke_local(db: _Database, key_id: str) -> None:
    from task_framework.errors import NotFound

    async def _revoke(keys: KeyRing) -> None:
        await keys.revoke_key(key_id)

    try:
        db.run(_revoke)
    except NotFound as exc:
        fail(exc.message)


@keys_app.command("create")
@remote
def create_key(
    conn: Conn,
    name: NameOpt,
    admin: AdminOpt = False,
    bind_app: Annotated[
        str | None, typer.Option(metavar="ID", help="Bind the key to this app_id")
    ] = None,
    bind_user: Annotated[
        str | None, typer.Option(metavar="ID", help="Bind the key to this user_id")
    ] = None,
    expires_at: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="Expiry (RFC 3339)")
    ] = None,
    local: LocalOpt = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Create a key; its secret is printed once."""
    if admin and (bind_app or bind_user):
        fail("admin keys cannot be bound to an app_id/user_id")
    db = _Database(local, data_dir, database_url)
    if db.chosen:
        key = _create_local(
            db, name=name, admin=admin, app_id=bind_app, user_id=bind_user, expires_at=expires_at
        )
    else:
        with handled(conn) as client:
            key = client.create_api_key(
                name,
                role="admin" if admin else "user",
                app_id=bind_app,
                user_id=bind_user,
                expires_at=expires_at,
            )
    _print_created(conn, key)


@keys_app.command("list")
@remote_list
def list_keys(
    conn: Conn,
    include_revoked: Annotated[bool, typer.Option(metavar="", help="Also revoked keys")] = False,
    limit: LimitOpt = 50,
    every: AllOpt = False,
    local: LocalOpt = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List managed keys (never their secrets)."""
    db = _Database(local, data_dir, database_url)
    if db.chosen:
        items = _list_local(db, include_revoked=include_revoked)
        items = items if every else items[:limit]
    else:
        with handled(conn) as client:
            pages = client.iter_api_keys(
                page_size=min(limit, 1000), include_revoked=include_revoked
            )
            items = collect(pages, limit, every)
    print_items(conn, items, KEY_COLUMNS)


@keys_app.command("revoke")
@remote
def revoke_key(
    conn: Conn,
    key_id: KeyIdArg,
    local: LocalOpt = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a managed key."""
    db = _Database(local, data_dir, database_url)
    if db.chosen:
        _revoke_local(db, key_id)
    else:
        with handled(conn) as client:
            client.revoke_api_key(key_id)
    emit(conn, {"revoked": key_id}, lambda: out.print(f"revoked {key_id}"))


# -- api-key …: the old spelling, database access only ---------------------------------------

_LEGACY_CONN = Conn(None, None, None, None, json=False)


@legacy_app.command("create")
def legacy_create(
    name: NameOpt,
    admin: AdminOpt = False,
    app_id: Annotated[
        str | None, typer.Option(metavar="ID", help="Bind the key to this app_id")
    ] = None,
    user_id: Annotated[
        str | None, typer.Option(metavar="ID", help="Bind the key to this user_id")
    ] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key in the database; its secret is printed once."""
    if admin and (app_id or user_id):
        fail("admin keys cannot be bound to an app_id/user_id")
    db = _Database(True, data_dir, database_url)
    key = _create_local(db, name=name, admin=admin, app_id=app_id, user_id=user_id, expires_at=None)
    _print_created(_LEGACY_CONN, key)


@legacy_app.command("list")
def legacy_list(database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """List the keys in the database, revoked ones included."""
    db = _Database(True, data_dir, database_url)
    print_items(_LEGACY_CONN, _list_local(db, include_revoked=True), KEY_COLUMNS)


@legacy_app.command("revoke")
def legacy_revoke(
    key_id: KeyIdArg, database_url: DatabaseOpt = None, data_dir: DataDirOpt = None
) -> None:
    """Revoke a key in the database."""
    _revoke_local(_Database(True, data_dir, database_url), key_id)
    out.print(f"revoked {key_id}")
