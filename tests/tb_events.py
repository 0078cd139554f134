"""Test helper (no tests here): read TensorBoard event files without TensorFlow or TensorBoard.

An event file is a TFRecord stream — ``uint64 length | uint32 masked CRC-32C of the length | data |
uint32 masked CRC-32C of the data`` (little endian; ``masked = ((crc >> 15) | (crc << 17)) +
0xa282ead8``) — of ``Event`` protocol buffers, parsed here with the message classes that ship with
tensorboardX. The CRC-32C is computed bit by bit here, independently of the writer's table."""

from __future__ import annotations

import struct
from pathlib import Path


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one bit at a time."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path: str | Path) -> list[dict]:
    """Every event of a file as {"step", "wall_time", "scalars": {tag: value}}; raises ValueError on a
    bad CRC or a truncated record."""
    from tensorboardX.proto.event_pb2 import Event

    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {pos}")
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        body = data[pos + 12:pos + 12 + n]
        tail = data[pos + 12 + n:pos + 16 + n]
        if len(body) != n or len(tail) != 4 or struct.unpack("<I", tail)[0] != masked_crc(body):
            raise ValueError(f"{path}: bad data CRC at byte {pos}")
        pos += 16 + n
        event = Event.FromString(body)
        out.append({"step": event.step, "wall_time": event.wall_time,
                    "scalars": {v.tag: v.simple_value for v in event.summary.value}})
    return out
