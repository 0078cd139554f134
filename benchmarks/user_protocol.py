"""Table I's propagation rows (scenario 2 and the Copy / Interpolation references) under the paper
and the user evaluation protocols (``handprop_jax.evaluation.protocol``) on a built synthetic data
set, without a trained run (the rows need no predictor), and the error by frame gap.

    python benchmarks/user_protocol.py --data-dir /abs/data --seed 0 --out runs/user_protocol/seed0 \
        [--protocol both] [--rule vertices|joints] [--recrop 1] [--recrop-box-terms 1] \
        [--rows all|photometric|reference] [--set propagation.box_weight=0 ...]

Writes OUT/table1.{md,csv,json} and OUT/gap.{csv,md,png} (the splits are labelled "test" and
"test (user crops)") and prints the Markdown tables and the seconds taken.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from handprop_jax import config as config_lib
from handprop_jax.evaluation import data as eval_data
from handprop_jax.evaluation import gap as gap_lib
from handprop_jax.evaluation import protocol as protocol_lib
from handprop_jax.evaluation import table as table_lib
from handprop_jax.evaluation.rows import ROWS
from handprop_jax.evaluation.runner import evaluate_split, table_rows
from handprop_jax.hand import default_mano
from handprop_jax.propagation.core import Propagator
from handprop_jax.propagation.recrop import Recrop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding synthetic_hand_video/ (absolute path)")
    p.add_argument("--seed", type=int, default=0, help="the data set's generation seed (data.synth_seed)")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--protocol", default="both", choices=protocol_lib.PROTOCOLS)
    p.add_argument("--rule", default="vertices", choices=protocol_lib.RULES, help="label box rule (user)")
    p.add_argument("--recrop", type=int, default=protocol_lib.DEFAULT_RECROP.rounds,
                   help="re-crop rounds of the photometric propagation on user crops (-1: no re-cropping)")
    p.add_argument("--recrop-box-terms", type=int, default=int(protocol_lib.DEFAULT_RECROP.box_terms),
                   help="1: the second pass keeps the box/centre weights, 0: off")
    p.add_argument("--recrop-prior", default=protocol_lib.DEFAULT_RECROP.prior,
                   choices=("transfer", "previous"), help="the second pass's starting point (Recrop.prior)")
    p.add_argument("--rows", default="all",
                   choices=("all", "photometric", "reference", "both-sides", "nearest"),
                   help="all rows, the photometric ones, the references, both-sides or nearest-only rows")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    config = config_lib.override(config_lib.load("synthetic"), [
        f"data.data_dir={str(Path(args.data_dir).resolve())!r}", f"data.synth_seed={args.seed}",
        *args.overrides])
    pick = {"all": lambda r: True, "photometric": lambda r: r.method == "photometric",
            "reference": lambda r: r.method != "photometric", "both-sides": lambda r: r.both_sides,
            "nearest": lambda r: not r.both_sides}[args.rows]
    wanted = tuple(r for r in protocol_lib.user_rows(ROWS) if r.method != "paper" and pick(r))
    recrop = None if args.recrop < 0 else Recrop(args.recrop, bool(args.recrop_box_terms), args.recrop_prior)
    mano = default_mano(config)
    propagators = {m: Propagator.from_config(config, method=m) for m in ("photometric", "crop", "copy")}
    protocols = protocol_lib.resolve(args.protocol, config)
    results, seconds = {}, {}
    for proto in protocols:
        t = time.perf_counter()
        videos = eval_data.iter_videos(config, args.split)
        name = args.split
        if proto == "user":
            videos = protocol_lib.user_videos(config, args.split, videos, mano, args.rule, recrop)
            name = protocol_lib.user_split(args.split)
        results[name] = evaluate_split(config, args.split, videos, mano, {}, None, False, None, propagators,
                                       wanted)
        seconds[name] = round(time.perf_counter() - t, 1)
    out = Path(args.out)
    rows = table_rows(results)
    table_lib.write(rows, out)
    gap_lib.write(results, out)
    print(table_lib.markdown(rows, title=f"data seed {args.seed}, rule {args.rule}, recrop {recrop}, "
                                         f"{args.overrides}"))
    print()
    print(gap_lib.markdown(gap_lib.gap_rows(results)))
    print("seconds:", seconds)


if __name__ == "__main__":
    main()
