"""PyTorch reference for the train-step benchmarks: one Adam step of a ResNet-18 regressor in PyTorch.

The network is torchvision's ResNet-18 layout written out here (7x7/2 stem, BatchNorm, ReLU, 3x3/2
max-pool, four stages of two basic blocks with 64/128/256/512 channels, global average pool) with a
linear head of 61 outputs — the size of an annotation γ (3 root + 48 pose + 10 shape) — trained
with a mean-squared error and Adam. It stands for the encoder + regressor part of our stage-1 step
(no MANO layer, no augmentation), so ``benchmarks/train_step.py`` reports our step's rate relative
to it. torch is not a dependency of the project: ``pip install torch`` to use it.

Usage::

    python benchmarks/torch_step.py 64 64                       # RES BATCH, CPU float32
    python benchmarks/torch_step.py 224 256 --device cuda --dtype bfloat16
    python benchmarks/torch_step.py 64 64 --all-variants        # float32 / bfloat16 x NCHW / channels_last

Prints a table of images/s (median [min-max] of ``--repeats`` timings of ``--steps`` steps, after
two warm-up steps) and, last, ``RESULT {json}`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

HEAD = 61  # root (3) + pose (48) + betas (10)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; a 1x1 strided projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18Regressor(nn.Module):
    def __init__(self, width: int = 64, outputs: int = HEAD):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stages += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1))


def measure(res: int, batch: int, device: str = "cpu", bf16: bool = False, channels_last: bool = False,
            steps: int = 3, repeats: int = 3) -> dict:
    """images/s of the Adam step: {"median", "min", "max", "n"}."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model = ResNet18Regressor().to(dev)
    images = torch.rand(batch, 3, res, res, device=dev)
    target = torch.zeros(batch, HEAD, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-5)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(images)
        loss = nn.functional.mse_loss(out.float(), target)
        loss.backward()
        optimiser.step()

    for _ in range(2):
        step()
    sync()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(batch * steps / (time.perf_counter() - t))
    rates.sort()
    return {"median": float(np.median(rates)), "min": rates[0], "max": rates[-1], "n": len(rates)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("res", type=int, help="image side, pixels")
    p.add_argument("batch", type=int)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="bfloat16: torch.autocast (convolutions and matmuls in bfloat16)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--all-variants", action="store_true", help="float32/bfloat16 x NCHW/channels_last")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    variants = ([(d, cl) for d in ("float32", "bfloat16") for cl in (False, True)] if args.all_variants
                else [(args.dtype, args.channels_last)])
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} CPU threads, "
          f"{args.res} px, batch {args.batch}")
    print("| torch ResNet-18 step | img/s |\n|---|---|")
    results = []
    for dtype, cl in variants:
        rate = measure(args.res, args.batch, args.device, dtype == "bfloat16", cl, args.steps, args.repeats)
        name = f"{dtype}{' channels_last' if cl else ''}"
        print(f"| {name} | {rate['median']:.1f} [{rate['min']:.1f}-{rate['max']:.1f}] |", flush=True)
        results.append({"variant": name, "dtype": dtype, "channels_last": cl, "rate": rate})
    print("RESULT " + json.dumps({"res": args.res, "batch": args.batch, "device": args.device,
                                  "torch": torch.__version__, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
