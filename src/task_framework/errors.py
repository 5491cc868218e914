"""The one exception tree of task-framework.

Every error the services raise is a :class:`TaskFrameworkError`. Each class carries the
API error ``code`` and HTTP ``status`` it maps to; ``api/errors.py`` turns them into the
``{"detail": {...}}`` envelope in exactly one place. Services never raise HTTP exceptions.

This module imports only the standard library: task code sees it inside its own
environment (``ArtifactValidationError`` is part of the task-author surface).

Tree::

    TaskFrameworkError
    ├── ValidationFailed            400 VALIDATION_FAILED
    │   └── ArtifactValidationError     (also raised in task code)
    ├── AuthRequired                401 AUTH_REQUIRED
    ├── AuthInvalid                 401 AUTH_INVALID
    ├── AuthForbidden               403 AUTH_FORBIDDEN
    ├── AuthRateLimited             429 AUTH_RATE_LIMITED (extra ``retry_after`` seconds)
    ├── MetadataRequired            400 METADATA_REQUIRED
    ├── NotFound                    404 <resource>_NOT_FOUND
    ├── Conflict                    409 / 400 (TASK_ALREADY_EXISTS, ARTIFACT_REF_CONFLICT, ...)
    ├── InvalidState                400 THREAD_INVALID_STATE
    ├── TaskSelectionError          400 TASK_ID_REQUIRED
    ├── InvalidTaskPackage          400 INVALID_TASK_PACKAGE
    ├── DeploymentFailed            400 TASK_DEPLOYMENT_FAILED
    ├── PayloadTooLarge             413 FILE_SIZE_EXCEEDED
    ├── ServiceUnavailable          503 SERVICE_UNAVAILABLE
    ├── StorageError                503 FILE_STORAGE_ERROR
    └── EnvironmentBuildError       (runner: uv failed; wrapped as DeploymentFailed by services)
"""

from __future__ import annotations

from typing import Any, ClassVar


class TaskFrameworkError(Exception):
    """Base of every error raised by task-framework."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    title: ClassVar[str | None] = None

    def __init__(
        self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra: dict[str, Any] = extra or {}


class ValidationFailed(TaskFrameworkError):
    status = 400
    code = "VALIDATION_FAILED"


class ArtifactValidationError(ValidationFailed):
    """An artifact breaks the kind rules or the task's schemas."""


class AuthRequired(TaskFrameworkError):
    status = 401
    code = "AUTH_REQUIRED"


class AuthInvalid(TaskFrameworkError):
    status = 401
    code = "AUTH_INVALID"


class AuthForbidden(TaskFrameworkError):
    status = 403
    code = "AUTH_FORBIDDEN"


class AuthRateLimited(TaskFrameworkError):
    """Too many failed authentications from one address or for one key prefix; the
    answer carries ``Retry-After`` (``extra["retry_after"]``, whole seconds)."""

    status = 429
    code = "AUTH_RATE_LIMITED"


class MetadataRequired(TaskFrameworkError):
    status = 400
    code = "METADATA_REQUIRED"


class NotFound(TaskFrameworkError):
    """An unknown or foreign object. ``code`` names the resource (``THREAD_NOT_FOUND``)."""

    status = 404
    code = "NOT_FOUND"


class Conflict(TaskFrameworkError):
    status = 409
    code = "CONFLICT"

    def __init__(self, message: str, *, code: str, status: int = 409) -> None:
        super().__init__(message, code=code)
        self.status = status  # type: ignore[misc]


class InvalidState(TaskFrameworkError):
    status = 400
    code = "THREAD_INVALID_STATE"


class TaskSelectionError(TaskFrameworkError):
    status = 400
    code = "TASK_ID_REQUIRED"


class InvalidTaskPackage(TaskFrameworkError):
    status = 400
    code = "INVALID_TASK_PACKAGE"


class DeploymentFailed(TaskFrameworkError):
    status = 400
    code = "TASK_DEPLOYMENT_FAILED"
    title = "Deployment Failed"


class PayloadTooLarge(TaskFrameworkError):
    status = 413
    code = "FILE_SIZE_EXCEEDED"


class ServiceUnavailable(TaskFrameworkError):
    status = 503
    code = "SERVICE_UNAVAILABLE"
    title = "Service Unavailable"


class StorageError(TaskFrameworkError):
    status = 503
    code = "FILE_STORAGE_ERROR"


class EnvironmentBuildError(TaskFrameworkError):
    """``uv`` could not build a task environment; the message quotes uv's output."""

    status = 400
    code = "TASK_DEPLOYMENT_FAILED"
    title = "Deployment Failed"


__all__ = [
    "ArtifactValidationError",
    "AuthForbidden",
    "AuthInvalid",
    "AuthRateLimited",
    "AuthRequired",
    "Conflict",
    "DeploymentFailed",
    "EnvironmentBuildError",
    "InvalidState",
    "InvalidTaskPackage",
    "MetadataRequired",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "StorageError",
    "TaskFrameworkError",
    "TaskSelectionError",
    "ValidationFailed",
]
