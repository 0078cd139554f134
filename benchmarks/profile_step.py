"""Where the time of one HandProp train step goes, per XLA operation (CPU or GPU).

Usage (from the repository root)::

    .venv/bin/python benchmarks/profile_step.py                      # stage 1, 64 px, batch 64
    .venv/bin/python benchmarks/profile_step.py --phase align --top 60 --set model.dtype=bfloat16

Runs ``--warmup`` steps, then ``--steps`` steps under ``jax.profiler`` and prints, per step: the
wall time, the summed time of all operations (both executor threads; more than the wall time when
independent operations overlap), the time per operation kind (``ynn_fusion`` = matmuls and
convolutions on XLA:CPU, ``concatenate``/``pad_slice_fusion`` = im2col columns, ...) and the
time per part of the model (encoder stages, heads, the rest) and the
``--top`` slowest operations with their shape and the source operation XLA names for them. This
is the table that chose :func:`handprop_jax.model.conv.cpu_plan` and motivated
:mod:`handprop_jax.model.pool`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import train_step as bench  # noqa: E402

from handprop_jax import config as config_lib  # noqa: E402

_EXECUTOR_EVENTS = ("ThunkExecutor::Execute", "ThunkExecutor::Execute (wait for completion)",
                    "SlinkyThreadPool::Await")


def hlo_index(text: str) -> dict[str, tuple[str, str]]:
    """Instruction name -> (result shape, source op_name) from optimised HLO text."""
    out = {}
    for line in text.split("\n"):
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+?) [\w\-]+\(", line)
        if m:
            op = re.search(r'op_name="([^"]*)"', line)
            out[m.group(1)] = (m.group(2), op.group(1) if op else "")
    return out


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
    """Milliseconds per step of every named operation in the profile under ``trace_dir``."""
    files = sorted(glob.glob(f"{trace_dir}/plugins/profile/*/*.trace.json.gz"))
    if not files:
        raise RuntimeError(f"no trace written under {trace_dir}")
    events = json.load(gzip.open(files[-1]))["traceEvents"]
    times: dict[str, float] = collections.defaultdict(float)
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name in _EXECUTOR_EVENTS or name.startswith(("$", "Pjit")):
            continue
        times[name] += e["dur"] / 1e3 / steps
    return times


def model_part(source: str) -> str:
    """The model part an operation's source op_name belongs to: an encoder stage ("encoder/layer1",
    "encoder/conv1" = stem, ...), another Flax module of HandProp, or "other" (MANO, losses, Adam,
    augmentation: code outside the modules) / "(none)" (operations XLA created without a source)."""
    if not source:
        return "(none)"
    m = re.search(r"encoder/(layer\d|conv1|bn1)", source)
    if m:
        return f"encoder/{m.group(1)}"
    if "/encoder/" in source:
        return "encoder/other (max-pool, pooling)"
    m = re.search(r"HandProp\.(\w+)", source)
    return f"HandProp.{m.group(1)}" if m else "other (MANO, losses, optimiser, augmentation)"


def by_part(times: dict[str, float], hlo: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Milliseconds per step summed per :func:`model_part`."""
    parts: dict[str, float] = collections.defaultdict(float)
    for name, ms in times.items():
        parts[model_part(hlo.get(name, ("", ""))[1])] += ms
    return dict(parts)


def main(argv=None) -> int:
    from handprop_jax import hostmem

    if argv is None:  # run as a program: as the handprop command does; HANDPROP_HUGEPAGES=0 to compare
        hostmem.reexec_with_hugepages()
        hostmem.release_held_interrupt()  # the re-executed process: Ctrl-C works again
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", default="stage1", choices=["stage1", "align"])
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. model.conv_impl=xla (repeatable)")
    args = p.parse_args(argv)

    from handprop_jax.model.api import HandPropModel
    from handprop_jax.training import steps as steps_lib

    cfg = config_lib.override(config_lib.Config(), [f"data.image_size={args.res}",
                                                    f"train.batch_size={args.batch}", *args.set])
    step = jax.jit(steps_lib.make_train_step(cfg, args.phase), donate_argnums=(0,))
    variables = HandPropModel.create(cfg).init(jax.random.key(0))
    state = steps_lib.init_state(cfg, args.phase, variables, steps_lib.phase_key(cfg, args.phase))
    batch = jax.device_put(bench.fake_batch(args.phase, args.res, args.batch))
    key = jax.random.key(1)
    hlo = hlo_index(step.lower(state, batch, key).compile().as_text())
    for _ in range(args.warmup):
        state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    walls = []
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(args.steps):
            t = time.perf_counter()
            state, metrics = step(state, batch, key)
            jax.block_until_ready(metrics)
            walls.append(1e3 * (time.perf_counter() - t))
        jax.profiler.stop_trace()
        times = op_times(trace_dir, args.steps)

    kinds: dict[str, float] = collections.defaultdict(float)
    for name, ms in times.items():
        kinds[re.sub(r"\.\d+$", "", name)] += ms
    print(f"{args.phase} step, {args.res} px, batch {args.batch}, {jax.default_backend()}, "
          f"overrides {args.set or 'none'}")
    print(f"wall ms/step (profiled): {', '.join(f'{w:.0f}' for w in walls)}; summed op time "
          f"{sum(times.values()):.0f} ms/step")
    print("\n| op kind | ms/step |\n|---|---|")
    for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1])[:15]:
        print(f"| {kind} | {ms:.1f} |")
    print("\n| part of the model | ms/step |\n|---|---|")
    for part, ms in sorted(by_part(times, hlo).items(), key=lambda kv: -kv[1]):
        print(f"| {part} | {ms:.1f} |")
    print("\n| op | ms/step | shape | source |\n|---|---|---|---|")
    for name, ms in sorted(times.items(), key=lambda kv: -kv[1])[:args.top]:
        shape, source = hlo.get(name, ("", ""))
        print(f"| {name} | {ms:.1f} | {shape[:40]} | {source[-90:]} |")
    print(f"\nmedian wall {np.median(walls):.0f} ms/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
