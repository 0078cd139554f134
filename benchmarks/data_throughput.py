"""Training-pipeline throughput: stage-3 pairs/s (and stage-1 frames/s) at the demo resolution.

    python benchmarks/data_throughput.py [--data-dir DIR] [--config synthetic] [--batches 40]

Uses the data set already built in DIR when it matches the config, else builds a small one
(8/1/1 videos x 128 frames at the config's resolution) in a temporary directory. Prints a table for
grain worker counts 0 (in-process), 1 and 2. Compare with the train step's pairs/s
(benchmarks/train_step.py): the pipeline must not be the bottleneck.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from handprop_jax import config as config_lib
from handprop_jax.data import train_batches
from handprop_jax.data.build import build


def measure(config, stage: int, workers: int, batches: int) -> float:
    """Examples (pairs or frames) per second over ``batches`` batches, after 3 warm-up batches."""
    it = train_batches.train_iterator(config, stage, 0, 1, worker_count=workers)
    for _ in range(3):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * config.train.batch_size / (time.perf_counter() - t)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthetic")
    parser.add_argument("--data-dir", default=None,
                        help="built data set to read (default: build a small one)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    config = config_lib.load(args.config)
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        data = dataclasses.replace(config.data, data_dir=tmp.name, synth_videos=(8, 1, 1))
        print(f"building a small {data.image_size}px set (8/1/1 videos x {data.synth_frames} frames) ...")
        build(data.name, data.data_dir, data_config=data, verbose=False)
    else:
        data = dataclasses.replace(config.data, data_dir=args.data_dir)
    config = dataclasses.replace(config, data=data)
    print(f"\nbatch {config.train.batch_size}, {data.image_size}px, K={data.label_stride}")
    print(f"{'workers':>8} {'stage 3 pairs/s':>16} {'stage 1 frames/s':>17}")
    for w in args.workers:
        pairs = measure(config, 3, w, args.batches)
        frames = measure(config, 1, w, args.batches)
        print(f"{w:>8} {pairs:>16.0f} {frames:>17.0f}", flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
