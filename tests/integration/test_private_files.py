"""Files at rest (issue 15 item 6, issue 14 item 1): the data directory is 0700, and the
database with its WAL and SHM files and every key file are 0600, whatever the umask."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.fernet import Fernet

from conftest import ServerFactory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_dir_database_and_key_files_are_private(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # Defaults: SQLite in the data dir, generated vault key and generated API keys.
    server = await make_server(
        dev_tasks=[], admin_api_keys=[], api_keys=[], encryption_key=None, database_url=None
    )
    data = server.settings.data_dir
    admin = {"X-API-Key": server.services.generated_keys["admin_api_key"]}
    created = await server.client.put("/admin/credentials/a", headers=admin, json={"value": "v"})
    assert created.status_code in (200, 201), created.text
    assert mode(data) == 0o700
    database = data / "task_framework.db"
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        assert path.exists(), path
        assert mode(path) == 0o600, path
    assert mode(data / "secret.key") == 0o600
    assert mode(data / "generated-api-keys.json") == 0o600


async def test_files_of_an_older_installation_are_tightened(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    for name, content in (
        ("secret.key", Fernet.generate_key() + b"\n"),
        ("task_framework.db", b""),
        ("generated-api-keys.json", b"{}"),
    ):
        (data / name).write_bytes(content)
        (data / name).chmod(0o644)
    await make_server(
        dev_tasks=[], data_dir=data, admin_api_keys=[], encryption_key=None, database_url=None
    )
    assert mode(data) == 0o700
    for name in ("secret.key", "task_framework.db", "generated-api-keys.json"):
        assert mode(data / name) == 0o600, name
