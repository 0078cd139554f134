"""One prepared GPU measurement (``make bench-gpu`` / ``benchmarks/gpu_check.sh``), at most ~8 minutes.

For the stage-1 and stage-3 train steps at 224 px, in float32 and in bfloat16 (``model.dtype``;
``model.conv_impl=auto`` is XLA's native convolution on a GPU):

- the largest batch that fits: compile at ``--start`` images, read the executable's memory from XLA's
  memory analysis, predict the largest power-of-two batch within 85 % of the device memory (capped at
  ``--cap``), then run it; a RESOURCE_EXHAUSTED (or a predicted size over the device memory) halves it
  again, a success doubles it while it stays under the cap and the time budget;
- images/s at each batch run (median of ``--repeats`` timings of ``--steps`` steps, after 2 warm-up
  steps), XLA's FLOPs per step (cost analysis) and the MFU: FLOPs per second over the device's peak.
  Peaks assumed (dense, NVIDIA data sheets; ``--peak-tflops`` overrides): H100 SXM / H200 989 TFLOP/s
  bfloat16 and 494 TFLOP/s TF32; H100 PCIe 756 / 378; A100 312 / 156; L4 121 / 60. float32 runs are
  compared with the TF32 peak: XLA lets the GPU's tensor cores run float32 convolutions and matmuls in
  TF32 at JAX's default precision;
- the PyTorch reference (``benchmarks/torch_step.py``: ResNet-18 + linear head, Adam, no MANO) at
  the same size, when torch with CUDA is installed;
- the data pipeline's keep-up: stage-1 frames/s and stage-3 pairs/s of the grain pipeline on a small
  224 px synthetic set built in a temporary folder, against what the train steps consume.

Prints a table per part and writes the summary as JSON to ``--json`` (gpu_check.sh: ``$OUT/gpu_check.json``
when ``$OUT`` is set). Nothing is downloaded. ``--smoke`` runs the same code at toy sizes (a CPU check of
the script itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# (substring of jax's device_kind, bfloat16 TFLOP/s, TF32 TFLOP/s): dense peaks from NVIDIA's data sheets
PEAKS = (("H200", 989.0, 494.0), ("H100 PCIe", 756.0, 378.0), ("H100", 989.0, 494.0),
         ("A100", 312.0, 156.0), ("L4", 121.0, 60.0))
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM")


def peak_tflops(device_kind: str, dtype: str, override: float | None = None) -> float | None:
    """The dense peak assumed for ``dtype`` (bfloat16, else TF32) on ``device_kind`` (None: unknown)."""
    if override:
        return override
    for name, bf16, tf32 in PEAKS:
        if name.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else tf32
    return None


def is_oom(error: BaseException) -> bool:
    return any(m in str(error) for m in OOM_MARKERS)


def next_power_of_two_below(x: float) -> int:
    return 1 << max(int(x).bit_length() - 1, 0) if x >= 1 else 0


def largest_batch(trial: Callable[[int], dict | None], start: int, cap: int, predict: Callable[[dict], int],
                  time_left: Callable[[], float]) -> list[dict]:
    """Grow the batch to the largest that fits. ``trial(b)`` measures batch b and returns its record,
    or None when it does not fit (RESOURCE_EXHAUSTED); ``predict(record)`` guesses the largest batch
    from a record's memory. Returns the records of every batch that ran, the largest last."""
    done: list[dict] = []
    first = trial(start)
    if first is None:
        return done
    done.append(first)
    b = min(cap, max(2 * start, predict(first)))
    failed = None
    while b > done[-1]["batch"] and time_left() > 0:
        rec = trial(b)
        if rec is None:
            failed = b
            b //= 2
            continue
        done.append(rec)
        if failed is not None or b >= cap:
            break
        b = min(cap, 2 * b)
    return done


def train_trial(phase: str, dtype: str, res: int, args,
                memory_limit: float | None) -> Callable[[int], dict | None]:
    """The ``trial(batch)`` of :func:`largest_batch` for one phase and dtype."""
    import jax
    import numpy as np
    import train_step as bench

    from handprop_jax import config as config_lib
    from handprop_jax.model.api import HandPropModel
    from handprop_jax.training import steps

    def trial(batch: int) -> dict | None:
        cfg = config_lib.override(config_lib.Config(), [
            f"data.image_size={res}", f"train.batch_size={batch}", f"model.dtype={dtype}", *args.set])
        state = steps.init_state(cfg, phase, HandPropModel.create(cfg).init(jax.random.key(0)),
                                 steps.phase_key(cfg, phase))
        data = jax.device_put(bench.fake_batch(phase, res, batch))
        key = jax.random.key(1)
        t = time.perf_counter()
        try:
            compiled = jax.jit(steps.make_train_step(cfg, phase), donate_argnums=(0,)).lower(
                state, data, key).compile()
        except Exception as e:  # noqa: BLE001 - XLA raises its own error types
            if is_oom(e):
                return None
            raise
        compile_s = time.perf_counter() - t
        mem = bench.memory_bytes(compiled)
        record = {"phase": phase, "dtype": dtype, "res": res, "batch": batch, "compile_s": compile_s,
                  "exec_mem_gb": None if mem is None else mem / 1e9,
                  "flops_per_step": bench.cost_flops(compiled)}
        if mem is not None and memory_limit is not None and mem > memory_limit:
            print(f"  {phase} {dtype} batch {batch}: needs {mem / 1e9:.1f} GB > {memory_limit / 1e9:.1f} GB",
                  flush=True)
            return None
        holder = {"state": state}

        def call():
            holder["state"], metrics = compiled(holder["state"], data, key)
            return metrics["loss"]

        try:
            for _ in range(2):
                loss = call()
            loss = float(loss)
            per_call = bench.timed(call, args.repeats, args.steps)
        except Exception as e:  # noqa: BLE001
            if is_oom(e):
                return None
            raise
        images = batch * (1 if phase == "stage1" else 2)
        seconds = float(np.median(per_call))
        record.update(loss_finite=bool(np.isfinite(loss)), seconds_per_step=seconds,
                      images_per_s=images / seconds, images_per_step=images)
        print(f"  {phase} {dtype} batch {batch}: {images / seconds:.0f} img/s, compile {compile_s:.0f} s, "
              f"{record['exec_mem_gb'] or 0:.1f} GB", flush=True)
        return record

    return trial


def predictor(memory_limit: float | None, cap: int) -> Callable[[dict], int]:
    """Largest power-of-two batch whose memory, scaled linearly from a record, stays within 85 % of
    the device (the cap when the memory is unknown)."""

    def predict(record: dict) -> int:
        if memory_limit is None or not record.get("exec_mem_gb"):
            return cap
        per_image = record["exec_mem_gb"] * 1e9 / record["batch"]
        return min(cap, next_power_of_two_below(0.85 * memory_limit / per_image))

    return predict


def data_keep_up(res: int, smoke: bool, time_left: Callable[[], float]) -> dict:
    """Stage-1 frames/s and stage-3 pairs/s of the grain pipeline on a small synthetic set at ``res``."""
    import data_throughput

    from handprop_jax import config as config_lib
    from handprop_jax.data.build import build

    config = config_lib.load("synthetic", [f"data.image_size={res}", "train.batch_size=64"])
    workers = sorted({0, min(8, os.cpu_count() or 1)})
    with tempfile.TemporaryDirectory() as tmp:
        data = dataclasses.replace(config.data, data_dir=tmp, synth_videos=(2, 1, 1) if smoke else (4, 1, 1),
                                   synth_frames=32 if smoke else 64)
        t = time.perf_counter()
        build(data.name, data.data_dir, data_config=data, verbose=False)
        out = {"res": res, "batch": 64, "build_s": time.perf_counter() - t, "rows": []}
        config = dataclasses.replace(config, data=data)
        for w in workers:
            if time_left() <= 0:
                out["note"] = "time budget spent"
                break
            n = 4 if smoke else 20
            out["rows"].append({"workers": w, "stage3_pairs_per_s": data_throughput.measure(config, 3, w, n),
                                "stage1_frames_per_s": data_throughput.measure(config, 1, w, n)})
    return out


def torch_reference(res: int, batch: int, dtype: str, steps: int) -> dict:
    import importlib.util
    import subprocess

    if importlib.util.find_spec("torch") is None:
        return {"note": "torch not installed"}
    script = ROOT / "benchmarks" / "torch_step.py"
    command = [sys.executable, str(script), str(res), str(batch), "--device", "cuda", "--dtype", dtype,
               "--steps", str(steps), "--repeats", "2"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        return {"note": f"torch_step.py failed: {(proc.stderr or proc.stdout)[-300:]}"}
    return json.loads(line[len("RESULT "):])["results"][0] | {"batch": batch}


def save(summary: dict, path: str | None) -> None:
    """Write the summary so far (called after every part: a run cut short still leaves its results)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary, indent=1))


def fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--phases", nargs="+", default=["stage1", "align"], choices=["stage1", "align"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--start", type=int, default=64, help="first batch (images of stage 1, pairs of stage 3)")
    p.add_argument("--cap", type=int, default=1024, help="largest batch tried")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=420.0, help="stop growing batches after this (s)")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the assumed peak (both dtypes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-data", action="store_true")
    p.add_argument("--smoke", action="store_true", help="toy sizes (checks the script, e.g. on a CPU)")
    p.add_argument("--json", default=None, help="write the summary here")
    args = p.parse_args(argv)
    if args.smoke:
        args.res, args.start, args.cap, args.steps, args.repeats = 32, 2, 4, 1, 1
        args.set = ["model.encoder_width=8", *args.set]
    t0 = time.perf_counter()
    time_left = lambda: args.budget_s - (time.perf_counter() - t0)  # noqa: E731

    import jax

    device = jax.devices()[0]
    try:
        memory_limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - not every backend reports memory
        memory_limit = None
    summary = {"jax": jax.__version__, "backend": jax.default_backend(), "device": device.device_kind,
               "devices": jax.device_count(),
               "memory_limit_gb": None if memory_limit is None else memory_limit / 1e9, "res": args.res,
               "cap": args.cap, "train": [], "torch": [], "data": None,
               "peaks_tflops": {d: peak_tflops(device.device_kind, d, args.peak_tflops) for d in args.dtypes}}
    print(f"jax {jax.__version__}, {jax.default_backend()}, {jax.device_count()} x {device.device_kind}, "
          f"memory limit {fmt(summary['memory_limit_gb'], '.0f')} GB; peaks assumed (TFLOP/s): "
          f"{summary['peaks_tflops']}", flush=True)
    best = {}
    configs = [(ph, dt) for ph in args.phases for dt in args.dtypes]
    for i, (phase, dtype) in enumerate(configs):
        share = time_left() / (len(configs) - i)
        t_cfg = time.perf_counter()
        records = largest_batch(train_trial(phase, dtype, args.res, args, memory_limit), args.start, args.cap,
                                predictor(memory_limit, args.cap),
                                lambda t_cfg=t_cfg, share=share: share - (time.perf_counter() - t_cfg))
        peak = summary["peaks_tflops"][dtype]
        for r in records:
            fl = r["flops_per_step"]
            r["tflops_per_s"] = None if fl is None else fl / r["seconds_per_step"] / 1e12
            r["mfu"] = None if fl is None or peak is None else r["tflops_per_s"] / peak
        summary["train"] += records
        if records:
            best[(phase, dtype)] = records[-1]
        save(summary, args.json)
    print(f"\n### train step, {args.res} px (largest batch that ran last per row group)")
    print("| phase | dtype | batch | img/s | compile s | GFLOP/step | TFLOP/s | MFU | exec GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in summary["train"]:
        gflop = None if r["flops_per_step"] is None else r["flops_per_step"] / 1e9
        mfu = None if r["mfu"] is None else 100 * r["mfu"]
        print(f"| {r['phase']} | {r['dtype']} | {r['batch']} | {r['images_per_s']:.0f} | "
              f"{r['compile_s']:.0f} | {fmt(gflop, '.0f')} | {fmt(r['tflops_per_s'], '.1f')} | "
              f"{fmt(mfu, '.1f')}% | {fmt(r['exec_mem_gb'], '.1f')} |")
    if not args.no_torch and jax.default_backend() == "gpu":
        for dtype in args.dtypes:
            jax_row = best.get(("stage1", dtype))
            batch = jax_row["batch"] if jax_row else 256
            summary["torch"].append(torch_reference(args.res, batch, dtype, args.steps) | {"dtype": dtype})
            save(summary, args.json)
        print("\n### PyTorch reference (ResNet-18 + linear head, Adam; no MANO), same device")
        for t in summary["torch"]:
            rate = t.get("rate", {}).get("median")
            jax_row = best.get(("stage1", t["dtype"]))
            ratio = None if rate is None or jax_row is None else jax_row["images_per_s"] / rate
            print(f"| torch {t['dtype']} | batch {t.get('batch')} | {fmt(rate, '.0f')} img/s | "
                  f"JAX stage 1 / torch {fmt(ratio, '.2f')} | {t.get('note', '')} |")
    if not args.no_data and time_left() > 30:
        summary["data"] = data_keep_up(args.res, args.smoke, time_left)
        need1 = max((r["images_per_s"] for r in summary["train"] if r["phase"] == "stage1"), default=None)
        need3 = max((r["images_per_s"] / 2 for r in summary["train"] if r["phase"] == "align"), default=None)
        print(f"\n### data pipeline, {args.res} px, batch 64 (built in {summary['data']['build_s']:.0f} s)")
        print(f"| workers | stage-1 frames/s (step needs {fmt(need1, '.0f')}) | "
              f"stage-3 pairs/s (step needs {fmt(need3, '.0f')}) |\n|---|---|---|")
        for r in summary["data"]["rows"]:
            print(f"| {r['workers']} | {r['stage1_frames_per_s']:.0f} | {r['stage3_pairs_per_s']:.0f} |")
    elif not args.no_data:
        summary["data"] = {"note": "skipped: time budget spent"}
    summary["wall_s"] = time.perf_counter() - t0
    save(summary, args.json)
    print(f"\ntotal {summary['wall_s']:.0f} s" + (f"; summary: {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
