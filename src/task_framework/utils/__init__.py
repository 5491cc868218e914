"""Helpers of the task-author surface (standard library and pydantic only)."""
