"""Context for `--conv-impl bf16_cols`: the shared PyTorch anchor's ResNet-18 Adam step (the same
model, loss and optimiser as ``../shared/bench/torch_resnet18_step.py``) with its convolutions in
bfloat16 too, ``torch.autocast("cpu", dtype=torch.bfloat16)`` (oneDNN on AMX / AVX512-BF16), and
in float32 with ``channels_last`` memory format.

Usage (needs torch; not a dependency of the project)::

    .venv/bin/python benchmarks/train_step.py --conv-impl bf16_cols ...   # the JAX side
    .venv/bin/python benchmarks/torch_bf16_step.py 64 64 --repeats 3     # RES BATCH

Prints images/s (median [min-max] of ``--repeats`` timings of ``--steps`` steps) per variant:
``float32`` (the anchor as it is), ``float32 channels_last``, ``autocast bfloat16``, and
``autocast bfloat16 channels_last``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "bench" / "torch_resnet18_step.py"


def load_anchor():
    spec = importlib.util.spec_from_file_location("torch_resnet18_step", ANCHOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # sets torch.set_num_threads(2), as the anchor does
    return module


def rate(anchor, res: int, batch: int, bf16: bool, channels_last: bool, steps: int, repeats: int):
    torch.manual_seed(0)
    model = anchor.ResNet18()
    x = torch.ones(batch, 3, res, res)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 5e-5)

    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = (out.float() ** 2).mean()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(batch * steps / (time.perf_counter() - t))
    return float(np.median(rates)), min(rates), max(rates)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("res", type=int)
    p.add_argument("batch", type=int)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    anchor = load_anchor()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.res} px, batch {args.batch}")
    print("| torch ResNet-18 step | img/s |\n|---|---|")
    variants = (("float32", False, False), ("float32 channels_last", False, True),
                ("autocast bfloat16", True, False), ("autocast bfloat16 channels_last", True, True))
    for name, bf16, cl in variants:
        med, lo, hi = rate(anchor, args.res, args.batch, bf16, cl, args.steps, args.repeats)
        print(f"| {name} | {med:.1f} [{lo:.1f}-{hi:.1f}] |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
