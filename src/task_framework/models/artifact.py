"""The Artifact model: a thread's input or output (API.md §5.2).

Task code imports it as ``from task_framework.models.artifact import Artifact``; it
depends only on the standard library and pydantic.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from task_framework.models._time import format_ts
from task_framework.utils.artifact_validation import model_rule_error

ARTIFACT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_REF_LENGTH = 255

Direction = Literal["input", "output"]


class Artifact(BaseModel):
    """A typed piece of data attached to a thread."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str | None = None
    thread_id: str | None = None
    kind: str
    media_type: str | None = None
    explain: str | None = None
    ref: str | None = None
    size: int | None = None
    sha256: str | None = None
    file_ref: str | None = None
    url: str | None = None
    value: Any = None
    text: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    archived: bool = False
    archived_at: datetime | None = None
    task_id: str | None = None
    task_version: str | None = None
    direction: Direction | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, str) and not ARTIFACT_ID_PATTERN.fullmatch(value):
            raise ValueError("artifact id must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
        return value

    @field_validator("ref")
    @classmethod
    def _check_ref(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("ref must not be blank")
        if len(value) > MAX_REF_LENGTH:
            raise ValueError(f"ref must be at most {MAX_REF_LENGTH} characters")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _check_kind_rules(self) -> Artifact:
        problem = model_rule_error(self.kind, self.__dict__)
        if problem is not None:
            raise ValueError(problem)
        return self

    @field_serializer("created_at", "archived_at", when_used="json")
    def _serialize_ts(self, value: datetime | None) -> str | None:
        return format_ts(value)


__all__ = ["Artifact", "Direction"]
