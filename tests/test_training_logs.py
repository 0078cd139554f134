"""TensorBoard event files written without TensorFlow: CRC-32C, TFRecord framing, Event protobuf."""

import struct

import numpy as np

from handprop_jax.training import logs


def test_crc32c_known_vectors():
    # RFC 3720 (iSCSI) B.4 test vectors and the classic "123456789" check value
    assert logs.crc32c(b"123456789") == 0xE3069283
    assert logs.crc32c(bytes(32)) == 0x8A9136AA
    assert logs.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert logs.crc32c(bytes(range(32))) == 0x46DD794E


def test_tfrecord_framing_and_event_fields_by_hand(tmp_path):
    w = logs.EventWriter(tmp_path)
    w.scalars(7, {"loss": 0.25, "val/mpjpe": 12.5})
    w.close()
    data = w.path.read_bytes()
    assert w.path.name.startswith("events.out.tfevents.")
    # record 1: file_version event; record 2: the scalars
    n1 = struct.unpack("<Q", data[:8])[0]
    second = data[16 + n1:]
    n2 = struct.unpack("<Q", second[:8])[0]
    body = second[12:12 + n2]
    assert len(second) == 16 + n2
    # Event: field 1 double wall_time (tag 0x09), field 2 varint step (tag 0x10, value 7)
    assert body[0] == 0x09 and body[9] == 0x10 and body[10] == 7
    # Summary (field 5, tag 0x2a) → Value (tag 0x0a) → tag "loss" (0x0a, len 4) + simple_value (0x15, float)
    i = body.index(b"loss")
    assert body[i - 2:i] == b"\x0a\x04" and body[i + 4] == 0x15
    assert struct.unpack("<f", body[i + 5:i + 9])[0] == 0.25
    events = logs.read_events(w.path)
    assert events[1]["step"] == 7
    got = events[1]["scalars"]
    np.testing.assert_allclose([got["loss"], got["val/mpjpe"]], [0.25, 12.5])
    # a corrupted byte is detected by the CRC
    bad = bytearray(data)
    bad[-6] ^= 0xFF
    (tmp_path / "bad").write_bytes(bytes(bad))
    try:
        logs.read_events(tmp_path / "bad")
    except ValueError as e:
        assert "CRC" in str(e)
    else:
        raise AssertionError("corruption not detected")
