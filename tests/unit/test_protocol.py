"""The worker protocol's framing."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from task_framework._version import SDK_PROTOCOL_VERSION
from task_framework.runner import protocol as p


def test_frame_round_trip_with_payload() -> None:
    message = {"type": p.UPLOAD_CHUNK, "id": 3, "text": "héllo"}
    frame = p.encode(message, b"\x00\x01binary")
    decoded = p.read_frame(io.BytesIO(frame))
    assert decoded == (message, b"\x00\x01binary")


def test_header_states_both_lengths() -> None:
    frame = p.encode({"type": p.END, "id": 1}, b"abc")
    json_len, payload_len = p.decode_header(frame[: p.HEADER.size])
    assert payload_len == 3
    assert frame[p.HEADER.size + json_len :] == b"abc"


def test_consecutive_frames_then_end_of_stream() -> None:
    stream = io.BytesIO(p.encode({"type": p.LOG, "records": []}) + p.encode({"type": p.OUTCOME}))
    assert p.read_frame(stream) == ({"type": p.LOG, "records": []}, b"")
    assert p.read_frame(stream) == ({"type": p.OUTCOME}, b"")
    assert p.read_frame(stream) is None


def test_truncated_frame_is_an_error() -> None:
    frame = p.encode({"type": p.HELLO, "version": 1})
    with pytest.raises(p.ProtocolError, match="closed inside a frame"):
        p.read_frame(io.BytesIO(frame[:-2]))


@pytest.mark.parametrize(
    "header", [p.HEADER.pack(0, 0), p.HEADER.pack(10, p.MAX_PAYLOAD_BYTES + 1)]
)
def test_out_of_bounds_header_is_refused(header: bytes) -> None:
    with pytest.raises(p.ProtocolError, match="bad frame header"):
        p.decode_header(header)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"no_type": 1}', b'{"type": 5}'])
def test_body_must_be_an_object_with_a_type(body: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_body(body)


def test_protocol_version_is_the_sdk_version() -> None:
    assert p.PROTOCOL_VERSION == SDK_PROTOCOL_VERSION


def test_frames_over_a_socketpair() -> None:
    left, right = socket.socketpair()
    big = bytes(range(256)) * 8192

    def send() -> None:
        for i in range(3):
            p.send_frame(left, {"type": p.CHUNK, "id": i}, big)

    try:
        sender = threading.Thread(target=send)
        sender.start()
        with right.makefile("rb") as stream:
            for i in range(3):
                assert p.read_frame(stream) == ({"type": p.CHUNK, "id": i}, big)
            sender.join()
            left.close()
            assert p.read_frame(stream) is None
    finally:
        left.close()
        right.close()
