"""Throughput of the HandProp train steps (stage 1 and stage 3), evaluation and propagation,
side by side with PyTorch's ResNet-18 Adam step on the same machine.

Usage (from the repository root)::

    .venv/bin/python benchmarks/train_step.py                      # 64 px B=64 and 224 px B=16
    .venv/bin/python benchmarks/train_step.py --sizes 64x64 --repeats 7 --json out.json
    .venv/bin/python benchmarks/train_step.py --layers 64x64          # per-layer conv timings
    .venv/bin/python benchmarks/train_step.py --conv-impl bf16_cols     # bf16 conv operands (CPU)
    .venv/bin/python benchmarks/train_step.py --conv-impl xla --dtype bfloat16 --no-torch

What is measured (each after two warm-up calls, ``--repeats`` timings of ``--steps`` calls, the
median reported with the min-max range, because the machine may be shared):

- ``stage1``: ``handprop_jax.training.steps.make_train_step(config, "stage1")`` — augmentation,
  encoder + regressor, MANO, L_pred, Adam — jitted with donated state; images/s.
- ``stage3``: the same for phase ``"align"`` (pairs of images, L_pred + λ L_align, two aligners,
  both images through the encoder as one 2B batch); images/s counts both images of a pair.
- ``photometric`` (``--phases ... photometric``): Hasson et al.'s phase (a labelled batch plus a
  pair batch (u, s); the labelled frames and u through the encoder as one 2B batch, L_pred, the
  rasterised reference mesh of s, the cycle check's raster of u's predicted mesh, the masked L1 of
  the warp); images/s counts the 2B encoded images.
- ``eval``: ``features`` + ``regress`` of ``HandPropModel.bind`` (scenario 1, frames/s).
- ``propagate``: features of (s, u) + ``align`` of the same (scenario 2 / ``handprop propagate``,
  target frames/s, the features of both frames recomputed).
- ``torch``: ``benchmarks/torch_step.py RES BATCH`` (our PyTorch ResNet-18 + 61-wide head Adam step,
  no MANO; on the GPU when JAX runs there) in a subprocess, ``--torch-repeats`` times, median;
  skipped with a note when torch is not importable. This script, like ``handprop train``,
  re-executes itself with malloc huge pages on the CPU backend (:mod:`handprop_jax.hostmem`); the
  PyTorch subprocess gets the environment as it was.
- compile time (lower + compile) separately; XLA's FLOPs of one step (cost analysis), the FLOP
  rate achieved and its fraction of a large float32 matmul's FLOP rate measured in the same run,
  both per wall second and per CPU-second (the latter is robust to other processes' load), and
  of a bfloat16 matmul's (float32 sums: the bound of ``--conv-impl bf16_cols``'s convolutions);
  the executable's memory (arguments + outputs + temporaries from XLA's memory analysis), the
  process's minor page faults per train step, and the process's peak RSS.
- ``img per CPU-s``: images per second of this process's CPU time (both cores busy = 2 CPU-s per
  second): a load-robust estimate of what an unloaded machine gives (x 2 for two free cores, if
  the step scales perfectly); wall-clock rates on a shared machine are depressed and noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handprop_jax import config as config_lib  # noqa: E402

TORCH_SCRIPT = Path(__file__).resolve().parent / "torch_step.py"  # our PyTorch reference


# ----------------------------------------------------------------------------- helpers
CPU_SECONDS: list[float] = []  # process CPU seconds per call of the last ``timed`` run
FAULTS: list[float] = []  # minor page faults of this process per call of the last ``timed`` run


def timed(fn, repeats: int, steps: int) -> list[float]:
    """Wall seconds per call of ``fn`` (which returns something to block on): ``repeats`` values.
    The process CPU seconds and minor page faults per call of each window are left in
    :data:`CPU_SECONDS` and :data:`FAULTS`."""
    out = []
    CPU_SECONDS.clear()
    FAULTS.clear()
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            r = fn()
        jax.block_until_ready(r)
        out.append((time.perf_counter() - t) / steps)
        CPU_SECONDS.append((time.process_time() - c) / steps)
        FAULTS.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f) / steps)
    return out


def per_cpu_second(items: int) -> float:
    """Items per CPU-second of this process over the last ``timed`` run (median window): much less
    sensitive than wall-clock rates when other processes share the cores."""
    return float(items / np.median(CPU_SECONDS))


def summary(per_call: list[float], items: int) -> dict:
    rates = sorted(items / t for t in per_call)
    return {"median": float(np.median(rates)), "min": rates[0], "max": rates[-1], "n": len(rates)}


def matmul_flops(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
    """FLOP/s of an n x n matmul with float32 sums and result (the machine's practical dense rate
    under XLA); ``dtype`` is the operands' type (bfloat16: AMX / AVX512-BF16 where the CPU has them)."""
    rng = np.random.RandomState(0)
    a = jnp.asarray(rng.randn(n, n), dtype)
    b = jnp.asarray(rng.randn(n, n), dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    jax.block_until_ready(f(a, b))
    t = timed(lambda: f(a, b), repeats, 3)
    return float(np.median([2 * n ** 3 / s for s in t]))


def cost_flops(compiled) -> float | None:
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, list | tuple):
            ca = ca[0]
        return float(ca["flops"])
    except Exception:  # noqa: BLE001 - cost analysis is optional per backend
        return None


def memory_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001
        return None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_config(res: int, batch: int, args) -> config_lib.Config:
    cfg = config_lib.Config()
    return config_lib.override(cfg, [f"data.image_size={res}", f"train.batch_size={batch}",
                                     f"model.conv_impl={args.conv_impl}", f"model.dtype={args.dtype}",
                                     f"data.augment={not args.no_augment}"])


def fake_frames(res: int, batch: int, seed: int, labelled: bool = True) -> dict:
    """A frame batch with plausible values (hand ~0.5 m in front of a pinhole camera)."""
    rng = np.random.RandomState(seed)
    f = 1.2 * res
    K = np.tile(np.array([[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]], np.float32), (batch, 1, 1))
    frame = {"image": rng.randint(0, 256, (batch, res, res, 3)).astype(np.uint8), "K": K,
             "video_id": np.zeros(batch, np.int32), "frame_index": np.arange(batch, dtype=np.int32)}
    if labelled:
        root = np.stack([rng.uniform(-0.02, 0.02, batch), rng.uniform(-0.02, 0.02, batch),
                         rng.uniform(0.4, 0.6, batch)], -1).astype(np.float32)
        joints = root[:, None] + rng.randn(batch, 21, 3).astype(np.float32) * 0.03
        uv = joints[..., :2] / joints[..., 2:] * f + res / 2
        frame.update(root=root, pose=(rng.randn(batch, 48) * 0.2).astype(np.float32),
                     betas=(rng.randn(batch, 10) * 0.5).astype(np.float32),
                     joints3d=joints, joints2d=uv.astype(np.float32))
    return frame


def fake_batch(phase: str, res: int, batch: int) -> dict:
    if phase == "stage1":
        return fake_frames(res, batch, 0)
    if phase == "photometric":  # Hasson et al.: a labelled batch plus pairs (u, s = N(u))
        return {"labelled": fake_frames(res, batch, 0), "s": fake_frames(res, batch, 1),
                "u": fake_frames(res, batch, 2, labelled=False)}
    return {"s": fake_frames(res, batch, 1), "u": fake_frames(res, batch, 2, labelled=False),
            "u_labelled": np.zeros(batch, bool)}


# ----------------------------------------------------------------------------- measurements
def bench_train(phase: str, cfg, res: int, batch: int, args) -> dict:
    from handprop_jax.model.api import HandPropModel
    from handprop_jax.training import steps

    step = steps.make_train_step(cfg, phase)
    variables = HandPropModel.create(cfg).init(jax.random.key(0))
    state = steps.init_state(cfg, phase, variables, steps.phase_key(cfg, phase))
    data = jax.device_put(fake_batch(phase, res, batch))
    key = jax.random.key(1)
    images = batch if phase == "stage1" else 2 * batch
    jitted = jax.jit(step, donate_argnums=(0,))
    t = time.perf_counter()
    compiled = jitted.lower(state, data, key).compile()
    compile_s = time.perf_counter() - t
    holder = {"state": state}

    def call():
        holder["state"], metrics = compiled(holder["state"], data, key)
        return metrics["loss"]

    for _ in range(2):
        loss = call()
    if not np.isfinite(float(loss)):
        raise RuntimeError(f"{phase}: non-finite loss {float(loss)} on the fake batch")
    per_call = timed(call, args.repeats, args.steps)
    flops = cost_flops(compiled)
    return {"what": f"{phase} train step", "images_per_call": images, "compile_s": compile_s,
            "rate": summary(per_call, images), "per_cpu_s": per_cpu_second(images), "flops_per_step": flops,
            "seconds_per_step": float(np.median(per_call)), "exec_mem_mb": _mb(memory_bytes(compiled)),
            "faults_per_step": float(np.median(FAULTS))}


def bench_eval(cfg, res: int, batch: int, args) -> list[dict]:
    from handprop_jax.gamma import Gamma
    from handprop_jax.model.api import Frame, HandPropModel

    model = HandPropModel.create(cfg)
    net = model.bind(model.init(jax.random.key(0)), batch)
    frames = jax.device_put(fake_frames(res, batch, 3))
    s = jax.device_put(fake_frames(res, batch, 4))
    gamma_s = Gamma.of(s)

    def evaluate():
        return net.regress(net.features(frames["image"]), frames["K"]).root

    def propagate():
        frame_s = Frame(net.features(s["image"]), s["K"])
        frame_u = Frame(net.features(frames["image"]), frames["K"])
        return net.align(gamma_s, frame_u, frame_s).pose

    out = []
    for name, fn in (("eval (features + regress)", evaluate),
                     ("propagate (features s,u + align)", propagate)):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s = time.perf_counter() - t
        jax.block_until_ready(fn())
        per_call = timed(fn, args.repeats, args.steps)
        out.append({"what": name, "images_per_call": batch, "compile_s": compile_s,
                    "rate": summary(per_call, batch), "per_cpu_s": per_cpu_second(batch),
                    "flops_per_step": None,
                    "seconds_per_step": float(np.median(per_call)), "exec_mem_mb": None})
    return out


def bench_torch(res: int, batch: int, args, dtype: str = "float32") -> dict:
    """Our PyTorch reference step (``torch_step.py``) in a subprocess, on the device JAX uses."""
    what = f"torch ResNet-18 step ({dtype})"
    if importlib.util.find_spec("torch") is None:
        return {"what": what, "note": "torch not importable: skipped"}
    from handprop_jax import hostmem

    device = "cpu" if jax.default_backend() == "cpu" else "cuda"
    rates = []
    for _ in range(args.torch_repeats):
        # PyTorch runs in the environment it was started with: malloc huge pages slow its step.
        out = subprocess.run([sys.executable, str(TORCH_SCRIPT), str(res), str(batch), "--device", device,
                              "--dtype", dtype, "--repeats", "1", "--steps", str(args.steps)],
                             capture_output=True, text=True, env=hostmem.original_environ())
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            return {"what": what, "note": f"torch_step.py failed: {(out.stderr or out.stdout)[-300:]!r}"}
        rates.append(json.loads(line[len("RESULT "):])["results"][0]["rate"]["median"])
    rates.sort()
    return {"what": what, "images_per_call": batch,
            "rate": {"median": float(np.median(rates)), "min": rates[0], "max": rates[-1], "n": len(rates)}}


def bench_layers(res: int, batch: int, args) -> None:
    """Per-layer forward+backward time of every ResNet-18 convolution shape, per formulation."""
    from handprop_jax.model.conv import conv2d, resolve_impl

    dtype = jnp.dtype(args.dtype)
    s = res // 4
    cases = [("stem 7x7/2", res, 3, 64, 7, 2, 3, 1)]
    for i, c in enumerate((64, 128, 256, 512)):
        hw = -(-s // 2 ** i)
        if i > 0:
            cases += [(f"layer{i + 1} 3x3/2", hw * 2, c // 2, c, 3, 2, 1, 1),
                      (f"layer{i + 1} 1x1/2", hw * 2, c // 2, c, 1, 2, 0, 1)]
        cases.append((f"layer{i + 1} 3x3/1", hw, c, c, 3, 1, 1, 3 if i > 0 else 4))
    impls = ("xla", "im2col", "taps", "auto") + (("bf16_cols",) if jax.default_backend() == "cpu" else ())
    totals = dict.fromkeys(impls, 0.0)
    print(f"\nper-layer conv forward+backward, {res} px, batch {batch}, {args.dtype} (ms, median of "
          f"{args.repeats})")
    print("| layer | input | count | " + " | ".join(impls) + " | auto picks |")
    print("|---|---|---|" + "---|" * (len(impls) + 1))
    rng = np.random.RandomState(0)
    for name, hw, cin, cout, k, st, p, count in cases:
        x = jnp.asarray(rng.randn(batch, hw, hw, cin), dtype)
        w = jnp.asarray(rng.randn(k, k, cin, cout) * 0.05, dtype)
        argnums = (1,) if name.startswith("stem") else (0, 1)
        row = []
        for impl in impls:
            def loss(x, w, impl=impl, st=st, pad=((p, p), (p, p))):
                return jnp.sum(jnp.square(conv2d(x, w, st, pad, impl).astype(jnp.float32)))

            g = jax.jit(jax.grad(loss, argnums=argnums))
            jax.block_until_ready(g(x, w))
            ms = 1e3 * float(np.median(timed(lambda g=g, x=x, w=w: g(x, w), args.repeats, 1)))
            totals[impl] += ms * count
            row.append(f"{ms:.1f}")
        out_hw = (-(-hw // st),) * 2
        pick = resolve_impl("auto", None, (k, k), (st, st), out_hw)
        print(f"| {name} | {hw}x{hw}x{cin} | {count} | " + " | ".join(row) + f" | {pick} |", flush=True)
    print("| **sum (x count)** | | | " + " | ".join(f"{totals[i]:.0f}" for i in impls) + " | |")


def _mb(b):
    return None if b is None else b / 2 ** 20


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def main(argv=None) -> int:
    from handprop_jax import hostmem

    if argv is None:  # run as a program: as the handprop command does; HANDPROP_HUGEPAGES=0 to compare
        hostmem.reexec_with_hugepages()
        hostmem.release_held_interrupt()  # the re-executed process: Ctrl-C works again
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["64x64", "224x16"],
                   help="RESxBATCH pairs (image side in pixels x batch)")
    p.add_argument("--phases", nargs="+", default=["stage1", "align"],
                   choices=["stage1", "align", "photometric"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="calls per timing")
    p.add_argument("--torch-repeats", type=int, default=3)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--conv-impl", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--layers", nargs="*", default=None,
                   help="only print per-layer conv timings for these RESxBATCH (default: --sizes)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()}, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r} (handprop_jax.hostmem)")
    if args.layers is not None:
        for res, batch in ([tuple(int(v) for v in s.split("x")) for s in args.layers] or sizes):
            bench_layers(res, batch, args)
        return 0

    peak = matmul_flops()
    peak_cpu = 2 * 2048 ** 3 / float(np.median(CPU_SECONDS))
    print(f"float32 2048x2048 matmul: {peak / 1e9:.1f} GFLOP/s wall, {peak_cpu / 1e9:.1f} GFLOP per CPU-s")
    peak_bf16 = matmul_flops(dtype=jnp.bfloat16)
    print(f"bfloat16 2048x2048 matmul (float32 sums): {peak_bf16 / 1e9:.1f} GFLOP/s wall "
          "(the rate bound of conv_impl=bf16_cols's convolutions)")
    results = []
    for res, batch in sizes:
        cfg = make_config(res, batch, args)
        rows = [bench_train(phase, cfg, res, batch, args) for phase in args.phases]
        if not args.no_eval:
            rows += bench_eval(cfg, res, batch, args)
        torch_row = None if args.no_torch else bench_torch(res, batch, args, args.dtype)
        if torch_row is not None:
            rows.append(torch_row)
        for r in rows:
            r.update(res=res, batch=batch)
        results += rows
        tr = torch_row["rate"]["median"] if torch_row and "rate" in torch_row else None
        print(f"\n### {res} px, batch {batch} (conv_impl={args.conv_impl}, dtype={args.dtype}); "
              f"median [min-max] of {args.repeats} x {args.steps} calls")
        print("| what | img/s | / torch | img per CPU-s | compile s | GFLOP/step | GFLOP/s | % matmul rate "
              "| % matmul per CPU-s | % bf16 matmul rate | exec MB | page faults/step |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if "rate" not in r:
                print(f"| {r['what']} | {r['note']} | | | | | | | | | | |")
                continue
            rate = r["rate"]
            ratio = None if tr is None or r["what"].startswith("torch") else rate["median"] / tr
            fl = r.get("flops_per_step")
            fr = None if fl is None else fl / r["seconds_per_step"]
            gflop = None if fl is None else fl / 1e9
            images = r.get("images_per_call")
            print(f"| {r['what']} | {rate['median']:.1f} [{rate['min']:.1f}-{rate['max']:.1f}] | "
                  f"{fmt(ratio, '.2f')} | {fmt(r.get('per_cpu_s'), '.1f')} | "
                  f"{fmt(r.get('compile_s'), '.1f')} | {fmt(gflop, '.1f')} | "
                  f"{fmt(None if fr is None else fr / 1e9, '.1f')} | "
                  f"{fmt(None if fr is None else 100 * fr / peak, '.0f')} | "
                  f"{fmt(None if fl is None else 100 * fl * r['per_cpu_s'] / images / peak_cpu, '.0f')} | "
                  f"{fmt(None if fr is None else 100 * fr / peak_bf16, '.0f')} | "
                  f"{fmt(r.get('exec_mem_mb'), '.0f')} | "
                  f"{fmt(r.get('faults_per_step'), '.0f')} |", flush=True)
    print(f"\npeak RSS of this process: {peak_rss_mb():.0f} MB; load average now {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"matmul_flops": peak, "matmul_flops_per_cpu_s": peak_cpu,
                                               "bf16_matmul_flops": peak_bf16,
                                               "load": os.getloadavg(),
                                               "peak_rss_mb": peak_rss_mb(), "results": results,
                                               "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
