"""File storage: the ``FileStorage`` port and its local and S3 adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from task_framework.storage.base import FileStorage, PresignedUrl, StoredObject, check_file_ref

if TYPE_CHECKING:
    from task_framework.settings import Settings
    from task_framework.storage.signing import UrlSigning


def build_storage(settings: Settings, *, signer: UrlSigning) -> FileStorage:
    """The adapter the settings select (``FILE_STORAGE_TYPE``)."""
    if settings.file_storage_type == "s3":
        from task_framework.storage.s3 import S3Storage

        if not settings.s3_bucket:
            raise ValueError("FILE_STORAGE_TYPE=s3 needs S3_BUCKET")
        return S3Storage(
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            prefix=settings.s3_path_prefix,
        )
    from task_framework.storage.local import LocalStorage

    return LocalStorage(settings.resolved_files_dir, signer=signer)


__all__ = ["FileStorage", "PresignedUrl", "StoredObject", "build_storage", "check_file_ref"]
