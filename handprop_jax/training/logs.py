"""Training logs: stdout lines, ``logs/metrics.jsonl`` and TensorBoard event files.

TensorBoard summaries are written with ``tensorboardX`` (which needs no TensorFlow): one folder per
phase, ``logs/tb/<phase>/events.out.tfevents.*``, so that ``tensorboard --logdir workdir/logs/tb``
shows every phase. Scalars only; the same numbers as the JSONL records, flushed at every log call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


class RunLogger:
    """Metrics of one phase to stdout (every call), ``logs/metrics.jsonl`` and ``logs/tb/<phase>``
    (on the main process only; the others write nothing)."""

    def __init__(self, workdir: str | Path, phase: str, stage: int, is_main: bool = True,
                 stream=None):
        self.phase, self.stage, self.is_main = phase, stage, is_main
        self.stream = stream or sys.stdout
        self.write = lambda line: print(line, file=self.stream, flush=True)  # e.g. tqdm.write
        if is_main:
            from tensorboardX import SummaryWriter

            logs = Path(workdir) / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(logs / "metrics.jsonl", "a")
            self._tb = SummaryWriter(str(logs / "tb" / phase))

    def log(self, step: int, metrics: dict[str, float], echo: bool = True) -> None:
        if not self.is_main:
            return
        values = {k: float(v) for k, v in metrics.items()}
        record = {"phase": self.phase, "stage": self.stage, "step": int(step), **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for tag, value in values.items():
            self._tb.add_scalar(tag, value, int(step))
        self._tb.flush()
        if echo:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self.write(f"[{self.phase} stage {self.stage}] step {step}: {shown}")

    def close(self) -> None:
        if self.is_main:
            self._jsonl.close()
            self._tb.close()
