"""Training logs: JSONL records and TensorBoard event files (tensorboardX) with the same numbers,
read back by an independent TFRecord reader (tests/tb_events.py)."""

import io
import json

import numpy as np
import pytest
from tb_events import crc32c, read_events

from handprop_jax.training.logs import RunLogger


def test_reader_crc_known_vectors():
    # RFC 3720 (iSCSI) B.4 test vectors and the classic "123456789" check value
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_jsonl_and_event_files_hold_the_same_scalars(tmp_path):
    out = io.StringIO()
    logger = RunLogger(tmp_path, "stage1", 1, stream=out)
    logger.log(2, {"loss": 0.25, "mpjpe_mm": 12.5})
    logger.log(4, {"loss": 0.125, "mpjpe_mm": 10.0})
    logger.log(4, {"val_mpjpe_mm": 11.0}, echo=False)
    # flushed at every call: readable before close
    files = sorted((tmp_path / "logs" / "tb" / "stage1").glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = read_events(files[0])
    assert [e["step"] for e in events if e["scalars"]] == [2, 4, 4]  # one event per log call
    assert events[1]["scalars"] == {"loss": 0.25, "mpjpe_mm": 12.5}
    logger.close()
    events = read_events(files[0])
    by_tag = {(e["step"], t): v for e in events for t, v in e["scalars"].items()}
    records = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 4] and {r["phase"] for r in records} == {"stage1"}
    for r in records:
        for tag, value in r.items():
            if tag not in ("phase", "stage", "step"):
                np.testing.assert_allclose(by_tag[(r["step"], tag)], value, rtol=1e-7)
    assert "step 4: loss=0.125 mpjpe_mm=10" in out.getvalue() and "val_mpjpe" not in out.getvalue()
    # a corrupted byte is caught by the CRC
    bad = bytearray(files[0].read_bytes())
    bad[-6] ^= 0xFF
    (tmp_path / "bad").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="CRC"):
        read_events(tmp_path / "bad")


def test_other_processes_write_nothing(tmp_path):
    logger = RunLogger(tmp_path, "align", 3, is_main=False)
    logger.log(1, {"loss": 1.0})
    logger.close()
    assert not (tmp_path / "logs").exists()
