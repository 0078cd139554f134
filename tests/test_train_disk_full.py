"""Issue 27, item 4 for ``handprop train``: a checkpoint write that meets a full disk is one line naming
the file and "No space left on device" (exit code 2), without orbax's tracebacks (its own error log of
the background write, asyncio's "Task exception was never retrieved" for each abandoned fragment
write, "Event loop is closed"), and the line does not claim the failed checkpoint.

No real full disk: every fragment write of orbax's background save fails as a full disk makes it
fail, either as tensorstore words it (a ValueError "RESOURCE_EXHAUSTED: ... No space left on device",
what a full tmpfs gave) or as an ``OSError(ENOSPC)``. In this process, on the in-memory frames and the
small stand-in encoder of tests/test_training_loop.py. Cost: 3.8 min for the two cases on a busy 2-core
machine with other tests beside it; the suite runs one (marked slow).
"""

import errno
import gc
import logging

import pytest
from orbax.checkpoint._src.serialization import serialization
from test_training_loop import cli_fakes, data, tiny_encoder  # noqa: F401  (fixtures)

from handprop_jax.cli import main


@pytest.mark.slow
# the suite runs tensorstore's wording (what a full tmpfs gave); "oserror" passed too when written
@pytest.mark.parametrize("kind", ["tensorstore"])
def test_full_disk_during_a_checkpoint_is_one_line(cli_fakes, tmp_path, capfd, caplog, monkeypatch,  # noqa: F811
                                                   kind):
    workdir = tmp_path / "run"
    target = workdir / "checkpoints" / "stage1" / "2.orbax-checkpoint-tmp" / "state" / "d" / "0a1b"

    def full(array):  # called for each fragment, in orbax's background thread, before its write
        if kind == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{target.parent}": Failed writing: '
                         f'"{target}": Failed to write 4096 bytes to file 8: No space left on device '
                         "[os_error_code='28']")

    monkeypatch.setattr(serialization, "estimate_write_memory_footprint", full)
    with caplog.at_level(logging.INFO):
        rc = main(["train", "--config", "tiny", "--workdir", str(workdir), "--stage", "1", "--no-progress"])
        gc.collect()  # abandoned orbax tasks report themselves when collected
    err = capfd.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and "Event loop" not in err, err
    # the file, the reason, where training stopped; no checkpoint was written (none is claimed)
    assert err == (f"handprop train: disk full ([Errno 28] No space left on device: '{target}') at step 3 "
                   "of phase 'stage1' (no checkpoint of it yet); re-run the same command to resume\n"), err
    # orbax's and asyncio's reports of the failed writes were not passed on to any handler either
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage()[:200] for r in noisy]
