"""Training logs: stdout lines, ``logs/metrics.jsonl`` and TensorBoard event files.

TensorBoard summaries are written with ``tensorboardX`` (which needs no TensorFlow): one folder per
phase, ``logs/tb/<phase>/events.out.tfevents.*``, so that ``tensorboard --logdir workdir/logs/tb``
shows every phase. Scalars only, the same numbers as the JSONL records: one event per log call
with all its scalars, written and flushed synchronously (tensorboardX's ``EventsWriter``; its
``SummaryWriter`` writes from a background thread, so a killed run could lose the last events).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path


def _scalars_event(step: int, values: dict[str, float]):
    """One TensorBoard ``Event`` holding every scalar of a log call (tensorboardX's summaries)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.summary import scalar

    summary = Summary(value=[v for tag, value in values.items() for v in scalar(tag, value).value])
    return Event(wall_time=time.time(), step=step, summary=summary)


@contextlib.contextmanager
def _naming(path: str):
    """An OSError without a file name (a write to an open file, e.g. ENOSPC) gets ``path`` as its file
    name, so that the message of a full disk names the file."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


class RunLogger:
    """Metrics of one phase to stdout (every call), ``logs/metrics.jsonl`` and ``logs/tb/<phase>``
    (on the main process only; the others write nothing)."""

    def __init__(self, workdir: str | Path, phase: str, stage: int, is_main: bool = True,
                 stream=None, resume_step: int | None = None):
        """``resume_step``: the step the phase resumes from; JSONL records of this phase after it
        (logged by an interrupted run after its last checkpoint, about to be logged again) and a
        line cut short by a kill are dropped, so that the file holds each step once."""
        self.phase, self.stage, self.is_main = phase, stage, is_main
        self.stream = stream or sys.stdout
        self.write = lambda line: print(line, file=self.stream, flush=True)  # e.g. tqdm.write
        if is_main:
            from tensorboardX.event_file_writer import EventsWriter

            logs = Path(workdir) / "logs"
            (logs / "tb" / phase).mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                self._drop_after(logs / "metrics.jsonl", resume_step)
            self._jsonl = open(logs / "metrics.jsonl", "a")
            self._tb = EventsWriter(str(logs / "tb" / phase / "events"))
            self._tb_path = str(logs / "tb" / phase)

    def _drop_after(self, path: Path, step: int) -> None:
        if not path.is_file():
            return
        kept, dropped = [], 0
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a kill
                dropped += 1
                continue
            if isinstance(record, dict) and record.get("phase") == self.phase \
                    and record.get("step", 0) > step:
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(path)

    def log(self, step: int, metrics: dict[str, float], echo: bool = True) -> None:
        if not self.is_main:
            return
        values = {k: float(v) for k, v in metrics.items()}
        record = {"phase": self.phase, "stage": self.stage, "step": int(step), **values}
        with _naming(self._jsonl.name):
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        with _naming(self._tb_path):
            self._tb.write_event(_scalars_event(int(step), values))
            self._tb.flush()
        if echo:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self.write(f"[{self.phase} stage {self.stage}] step {step}: {shown}")

    def close(self) -> None:
        if self.is_main:
            with _naming(self._jsonl.name):
                self._jsonl.close()
            with _naming(self._tb_path):
                self._tb.close()
