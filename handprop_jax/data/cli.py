"""handprop data: build a data set (tfds array_record) and print what it holds; export a built one in
the format of your own videos.

  handprop data build synthetic_hand_video --data-dir data [--config synthetic] [--set data.synth_frames=64]
  handprop data build ho3d --manual-dir /data/HO3D_v2 --data-dir data --config v2
  handprop data build interhand26m --manual-dir /data/InterHand2.6M --data-dir data --config mini_interhand
  handprop data build hand_videos --manual-dir my_videos --data-dir data --config own_videos
  handprop data export synthetic_hand_video --data-dir data --config synthetic --out my_videos --label-every 8
  handprop data synth-videos --out my_videos --videos 4 --frames 128 --size 320x240 --every 16 [--seed 0]

``--config`` names an experiment config (a file in experiments/configs or a path: its ``data`` section
gives the label stride K, the synthetic sizes, image size, builder config) or, if no such file
exists, a tfds builder config of NAME (e.g. ``v2``/``v3`` for ho3d); without an experiment config,
NAME's default one is used (synthetic, mini_ho3d, mini_interhand: 224 px crops and K = 128 for the
real data sets; own_videos for hand_videos). The MANO model is --mano-model, else the config's
model.mano_model if that file exists, else the builder looks for MANO_RIGHT.pkl in the manual dir;
hand_videos takes the config's model.mano_model as it is (a missing file is an error; None = the
synthetic hand). Prints, per split: videos, frames, labelled frames (every K-th, first and last
included; hand_videos: also the frames with a label and those held back for evaluation) and skipped
items with the reason, and the first skipped items by name.

Bad input (a frame with an unusable annotation or image) is skipped and counted; the report of what
was skipped, naming each file and frame, is ``DATA_DIR/<name>/<config>/<version>/skipped.json``.
``--set data.on_bad_input=raise`` stops at the first bad frame instead. The build stops (exit code 2,
one line, nothing written) on a missing download folder or annotation file, an unwritable
--data-dir, and a split that would be empty (the filter that emptied it is named, with the
``--set data....`` option that relaxes it: ``data.ho3d_val_sequences``, ``data.interhand_min_length``,
...).

``export`` writes the videos of a built data set as a hand_videos source folder (one folder per
video: frames/, labels.json with every --label-every-th frame, intrinsics.npy, boxes.json,
ground_truth.npz; and splits.json): the walkthrough of docs/own_videos.md uses it to try everything
on synthetic videos.

``synth-videos`` renders synthetic videos as a user has them: whole frames (4:3, e.g. 320x240) in
which the hand moves across the image, labels.json with the labels of every --every-th frame (and the
last) and the intrinsics "K", no boxes; and each video's dense ground truth in ``truth/`` in the format
``handprop propagate`` writes (annotations.json/.npz), for ``handprop score``
(:mod:`handprop_jax.data.full_frames`; README, "Propagating your own labels").
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from handprop_jax import config as config_lib

HELP = "build a dataset (synthetic_hand_video, ho3d, interhand26m, hand_videos) or export one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    b = sub.add_parser("build", help="prepare a data set in --data-dir and summarise it")
    from handprop_jax.data.build import BUILDERS

    b.add_argument("name", choices=sorted(BUILDERS), help="data set")
    b.add_argument("--data-dir", required=True, help="tfds data_dir to write")
    b.add_argument("--manual-dir", default=None, help="folder of the manual download (ho3d, interhand26m)")
    b.add_argument("--config", default=None,
                   help="experiment config name/path, or a tfds builder config of NAME (e.g. v2)")
    b.add_argument("--builder-config", default=None, help="tfds builder config (overrides the config's)")
    b.add_argument("--mano-model", default=None,
                   help="MANO_RIGHT.pkl/.npz for builders that need it (default: model.mano_model)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override, repeatable (e.g. data.synth_videos=[4,1,1])")
    e = sub.add_parser("export", help="write a built data set's videos as a hand_videos source folder")
    e.add_argument("name", choices=sorted(BUILDERS), help="data set (built in --data-dir)")
    e.add_argument("--data-dir", required=True, help="tfds data_dir it was built in")
    e.add_argument("--out", required=True, help="folder to write (one sub-folder per video, splits.json)")
    e.add_argument("--config", default=None, help="experiment config it was built with")
    e.add_argument("--label-every", type=int, default=None, metavar="N",
                   help="keep the labels of every N-th frame, first and last included "
                        "(default: data.label_stride)")
    e.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to export")
    e.add_argument("--videos", type=int, default=None, metavar="N", help="at most N videos per split")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override, repeatable (as for build)")
    e.add_argument("--builder-config", default=None, help="tfds builder config")
    s = sub.add_parser("synth-videos", help="render synthetic whole-frame videos with sparse labels and "
                                            "their dense ground truth (for handprop propagate and score)")
    s.add_argument("--out", required=True, help="folder to write (absent or empty): OUT/video_0000/...")
    s.add_argument("--videos", type=int, default=4, metavar="N", help="number of videos (default 4)")
    s.add_argument("--frames", type=int, default=128, metavar="T", help="frames per video (default 128)")
    s.add_argument("--size", default="320x240", metavar="WxH",
                   help="frame size in pixels, the camera's 4:3 (default 320x240; 640x480 is the camera's)")
    s.add_argument("--every", type=int, default=16, metavar="K",
                   help="label every K-th frame and the last (default 16)")
    s.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    s.add_argument("--travel", type=float, default=0.5,
                   help="how far the hand sweeps across the image over the video, in image widths "
                        "(default 0.5; 0: the generator's own motion, centred)")
    s.add_argument("--depth-scale", type=float, default=1.6,
                   help="the generator's hand depths (0.3-0.75 m, sized for crops) times this "
                        "(default 1.6: the hand spans about a quarter of the frame)")


def _is_config_file(name: str) -> bool:
    path = Path(name)
    return (path.suffix == ".py" and path.is_file()) or (not path.suffix and
                                                          (config_lib.CONFIG_DIR / f"{name}.py").is_file())


DEFAULT_CONFIGS = {"synthetic_hand_video": "synthetic", "ho3d": "mini_ho3d", "interhand26m": "mini_interhand",
                   "hand_videos": "own_videos"}
#: builders that take the run's MANO model as configured (model.mano_model; None = the synthetic hand)
RUN_MANO = {"hand_videos"}


def resolve(args: argparse.Namespace) -> tuple[config_lib.Config, str | None]:
    """The run config (its data section updated from the arguments) and the tfds builder config."""
    builder_config = args.builder_config
    if args.config is not None and _is_config_file(args.config):
        config = config_lib.load(args.config, args.overrides)
    else:
        default = DEFAULT_CONFIGS.get(args.name)
        config = (config_lib.load(default, args.overrides) if default and _is_config_file(default)
                  else config_lib.override(config_lib.Config(), args.overrides))
        if args.config is not None and builder_config is None:
            builder_config = args.config
    if builder_config is None and config.data.name == args.name:
        builder_config = config.data.builder_config
    data = dataclasses.replace(config.data, name=args.name, data_dir=args.data_dir,
                               builder_config=builder_config)
    return dataclasses.replace(config, data=data), builder_config


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "data_command", None)
    if command == "export":
        return export(args)
    if command == "synth-videos":
        return synth_videos(args)
    if command != "build":
        print("usage: handprop data build NAME --data-dir DIR [--manual-dir DIR] [--config CFG] [--set ...]\n"
              "       handprop data export NAME --data-dir DIR --out OUT [--config CFG] [--label-every N]\n"
              "       handprop data synth-videos --out OUT [--videos N] [--frames T] [--size WxH] "
              "[--every K]")
        return 2
    from handprop_jax.data.build import build
    from handprop_jax.errors import UserError, disk_full, writable_dir

    config, builder_config = resolve(args)
    mano_model = args.mano_model
    if args.name in RUN_MANO:
        mano_model = mano_model or config.model.mano_model or "synthetic"
    elif mano_model is None and config.model.mano_model and Path(config.model.mano_model).is_file():
        mano_model = config.model.mano_model
    # refused before anything is written (tfds writes downloads/ and the builder's folder first)
    writable_dir(args.data_dir, "--data-dir")
    if args.manual_dir is not None and not Path(args.manual_dir).is_dir():
        raise UserError(f"--manual-dir {args.manual_dir}: no such folder")
    if args.manual_dir is not None and not any(Path(args.manual_dir).iterdir()):
        raise UserError(f"--manual-dir {args.manual_dir}: the folder is empty (expected the manual download "
                        f"of {args.name}; docs/data.md and docs/own_videos.md say what goes there)")
    if args.name in RUN_MANO and mano_model != "synthetic" and not Path(mano_model).is_file():
        raise UserError(f"MANO model {mano_model} not found (model.mano_model): download MANO_RIGHT.pkl from "
                        "https://mano.is.tue.mpg.de (licence required) and put it there (--set "
                        "model.mano_model=PATH for another place), or --set model.mano_model=None for the "
                        "synthetic hand (only for labels made with it)")
    before = _incomplete(args.data_dir)
    try:
        build(args.name, args.data_dir, manual_dir=args.manual_dir, builder_config=builder_config,
              data_config=config.data, mano_model=mano_model)
    except Exception as e:  # bad input, a filter that empties a split, a path, a full disk
        full = disk_full(e)
        if full is None and not isinstance(e, UserError | ValueError | OSError):
            raise
        left = [p for p in _incomplete(args.data_dir) - before if p.exists()]
        for folder in left:  # tfds' unfinished output: nothing half-built stays behind
            shutil.rmtree(folder, ignore_errors=True)
        message = f"disk full while writing ({full})" if full else str(e).strip().splitlines()[0]
        cleaned = f"; removed the unfinished {', '.join(str(p) for p in left)}" if left else ""
        print(f"handprop data: {message}{cleaned}", file=sys.stderr)
        return 2
    return 0


def _incomplete(data_dir: str | Path) -> set[Path]:
    """tfds' unfinished build folders in ``data_dir`` (``<name>/<config>/incomplete.*`` and
    ``<name>/<config>/<version>.incomplete*``)."""
    root = Path(data_dir)
    if not root.is_dir():
        return set()
    return {p for pattern in ("*/*/incomplete.*", "*/*/*incomplete*", "*/incomplete.*")
            for p in root.glob(pattern) if p.is_dir()}


def export(args: argparse.Namespace) -> int:
    """``handprop data export``: a built data set's videos in the hand_videos source format."""
    from handprop_jax.data.export import export_videos
    from handprop_jax.data.sources import data_source
    from handprop_jax.errors import UserError, writable_dir

    args.mano_model = None
    config, _ = resolve(args)
    if args.label_every is not None and args.label_every < 1:
        raise config_lib.ConfigError(f"--label-every: expected an integer >= 1, got {args.label_every}")
    if args.videos is not None and args.videos < 1:
        raise config_lib.ConfigError(f"--videos: expected an integer >= 1, got {args.videos}")
    out = writable_dir(args.out, "--out")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held:  # as propagate: an earlier export's videos are never mixed with these
        raise UserError(f"--out {out}: the folder is not empty ({', '.join(held[:3])}"
                        f"{', ...' if len(held) > 3 else ''}); choose an absent or empty folder")
    for split in args.splits:  # a data set that was never built, a split it does not have
        try:
            data_source(config.data, split)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
    written = export_videos(config, args.out, args.label_every, tuple(args.splits), args.videos)
    n = sum(len(v) for v in written.values())
    print(f"exported {n} video(s) ({', '.join(f'{s}: {len(v)}' for s, v in written.items())}) to "
          f"{Path(args.out).resolve()} (labels every {args.label_every or config.data.label_stride} frames)")
    return 0


def _frame_size(text: str) -> tuple[int, int]:
    """``--size WxH`` as (H, W) pixels (ConfigError when not two positive integers)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise config_lib.ConfigError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 320x240")
    return int(parts[1]), int(parts[0])


def synth_videos(args: argparse.Namespace) -> int:
    """``handprop data synth-videos``: whole-frame synthetic videos with sparse labels and dense ground
    truth (:func:`handprop_jax.data.full_frames.synth_videos`)."""
    from handprop_jax.data import synthetic
    from handprop_jax.data.full_frames import TRUTH, synth_videos
    from handprop_jax.errors import UserError, writable_dir

    size = _frame_size(args.size)
    minimums = (("--videos", args.videos, 1), ("--frames", args.frames, 2), ("--every", args.every, 1))
    for name, value, low in minimums:
        if value < low:
            raise config_lib.ConfigError(f"{name}: expected an integer >= {low}, got {value}")
    if not 0 <= args.travel <= 1:
        raise config_lib.ConfigError(f"--travel: expected a number in [0, 1] (image widths), "
                                     f"got {args.travel}")
    if not 0.5 <= args.depth_scale <= 10:
        raise config_lib.ConfigError(f"--depth-scale: expected a number in [0.5, 10], got {args.depth_scale}")
    try:
        synthetic.frame_geometry(size)
    except ValueError as e:
        raise config_lib.ConfigError(f"--size {args.size}: {e}") from None
    out = writable_dir(args.out, "--out")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held:
        raise UserError(f"--out {out}: the folder is not empty ({', '.join(held[:3])}"
                        f"{', ...' if len(held) > 3 else ''}); choose an absent or empty folder")
    names = synth_videos(out, args.videos, args.frames, size, args.every, args.seed, args.travel,
                         args.depth_scale)
    print(f"wrote {len(names)} video(s) of {args.frames} frames ({args.size}, labels every {args.every}) to "
          f"{out.resolve()}/video_NNNN/{{frames,labels.json}}; ground truth in video_NNNN/{TRUTH}/")
    return 0
