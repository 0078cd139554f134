"""Training logs: stdout lines, ``logs/metrics.jsonl`` and TensorBoard event files.

TensorBoard summaries are written without TensorFlow (which this project must not import) and
without extra dependencies: an event file is a TFRecord stream of ``tensorflow.Event`` protocol
buffers, and scalar summaries need only a handful of protobuf fields, which :func:`_event` encodes
by hand:

- TFRecord: ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``
  (little endian; ``masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8``);
- ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string),
  ``summary`` (5, message); ``Summary.value`` (1, repeated message); ``Summary.Value``: ``tag``
  (1, string), ``simple_value`` (2, float).

The file name follows TensorBoard's pattern ``events.out.tfevents.<time>.<host>`` so that
``tensorboard --logdir workdir/logs/tb`` finds it; one sub-folder per phase.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, scalars: dict[str, float] | None = None,
           file_version: str | None = None) -> bytes:
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        out += _len_field(3, file_version.encode())
    if scalars:
        values = b"".join(
            _len_field(1, _len_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items())
        out += _len_field(5, values)
    return out


def tfrecord(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class EventWriter:
    """Append scalar summaries to a TensorBoard event file in ``logdir``."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = self.logdir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self._f = open(self.path, "ab")
        self._f.write(tfrecord(_event(now, 0, file_version="brain.Event:2")))
        self._f.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._f.write(tfrecord(_event(time.time(), int(step), values)))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_events(path: str | Path) -> list[dict]:
    """Parse an event file written by :class:`EventWriter` (checks every CRC) → list of
    ``{"step", "wall_time", "scalars": {tag: value}}``. For tests and quick looks."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != _masked_crc(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        body = data[pos + 12:pos + 12 + n]
        if struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] != _masked_crc(body):
            raise ValueError(f"{path}: bad data CRC at byte {pos}")
        pos += 16 + n
        out.append(_parse_event(body))
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, v


def _parse_event(buf: bytes) -> dict:
    ev = {"step": 0, "wall_time": 0.0, "scalars": {}}
    for field, v in _fields(buf):
        if field == 1:
            ev["wall_time"] = struct.unpack("<d", v)[0]
        elif field == 2:
            ev["step"] = v
        elif field == 5:
            for _, value in _fields(v):
                parts = dict(_fields(value))
                ev["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
    return ev


class RunLogger:
    """Metrics of one phase to stdout (every call), ``logs/metrics.jsonl`` and ``logs/tb/<phase>``."""

    def __init__(self, workdir: str | Path, phase: str, stage: int, is_main: bool = True,
                 stream=None):
        self.phase, self.stage, self.is_main = phase, stage, is_main
        self.stream = stream or sys.stdout
        self.write = lambda line: print(line, file=self.stream, flush=True)  # e.g. tqdm.write
        if is_main:
            logs = Path(workdir) / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(logs / "metrics.jsonl", "a")
            self._tb = EventWriter(logs / "tb" / phase)

    def log(self, step: int, metrics: dict[str, float], echo: bool = True) -> None:
        if not self.is_main:
            return
        record = {"phase": self.phase, "stage": self.stage, "step": int(step),
                  **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self._tb.scalars(step, {k: float(v) for k, v in metrics.items()})
        if echo:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self.write(f"[{self.phase} stage {self.stage}] step {step}: {shown}")

    def close(self) -> None:
        if self.is_main:
            self._jsonl.close()
            self._tb.close()
