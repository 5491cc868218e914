"""Frames and message names of the parent/worker protocol (docs/reference/worker-protocol.md).

A frame is a fixed header ``>II`` (length of the JSON part, length of the binary part),
a compact UTF-8 JSON object with a ``"type"``, then optional raw bytes (file chunks).
Standard library only: this module also runs inside task environments.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, BinaryIO

from task_framework._version import SDK_PROTOCOL_VERSION

HEADER = struct.Struct(">II")
MAX_JSON_BYTES = 256 * 1024 * 1024
"""Refuse frames whose JSON part is larger than this (a corrupt or hostile stream)."""
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024
"""File chunks travel in pieces of this size."""

PROTOCOL_VERSION = SDK_PROTOCOL_VERSION

# parent -> child
RUN = "run"
CHECK = "check"
CANCEL = "cancel"
REPLY = "reply"
CHUNK = "chunk"
END = "end"
SHUTDOWN = "shutdown"
# child -> parent
HELLO = "hello"
LOG = "log"
PUBLISH = "publish"
PROBLEM = "problem"
UPLOAD_BEGIN = "upload_begin"
UPLOAD_CHUNK = "upload_chunk"
UPLOAD_END = "upload_end"
DOWNLOAD = "download"
OUTCOME = "outcome"

# Error kinds carried by ``reply`` frames with ``ok: false``.
ERR_VALIDATION = "ArtifactValidationError"
ERR_NOT_FOUND = "NotFound"
ERR_REJECTED = "Rejected"
ERR_HOST = "HostError"


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame: header, JSON, payload."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return HEADER.pack(len(body), len(payload)) + body + payload


def decode_header(header: bytes) -> tuple[int, int]:
    """Lengths of the JSON and binary parts; raises ProtocolError when out of bounds."""
    json_len, payload_len = HEADER.unpack(header)
    if json_len == 0 or json_len > MAX_JSON_BYTES or payload_len > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"bad frame header ({json_len}, {payload_len})")
    return json_len, payload_len


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a frame; raises ProtocolError unless it is an object with a type."""
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("frame is not an object with a 'type'")
    return message


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    if len(data) != size:
        raise ProtocolError("connection closed inside a frame")
    return data


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """Blocking read of one frame from a buffered reader; ``None`` at end of stream."""
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    json_len, payload_len = decode_header(header)
    body = _read_exactly(stream, json_len)
    if body is None:
        raise ProtocolError("connection closed inside a frame")
    payload = b""
    if payload_len:
        payload = _read_exactly(stream, payload_len) or b""
        if len(payload) != payload_len:
            raise ProtocolError("connection closed inside a frame")
    return decode_body(body), payload


def send_frame(sock: socket.socket, message: dict[str, Any], payload: bytes = b"") -> None:
    """Blocking write of one frame (callers serialise concurrent writers)."""
    sock.sendall(encode(message, payload))


__all__ = [
    "CHUNK_BYTES",
    "HEADER",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "decode_body",
    "decode_header",
    "encode",
    "read_frame",
    "send_frame",
]
