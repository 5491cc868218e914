"""Models of the task-author surface."""

from task_framework.models.artifact import Artifact

__all__ = ["Artifact"]
