"""task-framework: host many task definitions and run them, isolated, over a REST API.

Task code sees only the task-author surface (``TaskContext``, ``Artifact``,
``ArtifactValidationError``); the server entry points are imported lazily so that this
module stays importable inside a task's own environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from task_framework._version import __version__
from task_framework.errors import ArtifactValidationError
from task_framework.models.artifact import Artifact

if TYPE_CHECKING:
    from task_framework.app import create_app
    from task_framework.context import TaskContext
    from task_framework.devserver import run_task

__all__ = [
    "Artifact",
    "ArtifactValidationError",
    "TaskContext",
    "__version__",
    "create_app",
    "run_task",
]


def __getattr__(name: str) -> Any:
    if name == "TaskContext":
        from task_framework.context import TaskContext

        return TaskContext
    if name == "create_app":
        from task_framework.app import create_app

        return create_app
    if name == "run_task":
        from task_framework.devserver import run_task

        return run_task
    raise AttributeError(f"module 'task_framework' has no attribute {name!r}")
