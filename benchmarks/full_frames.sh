#!/usr/bin/env bash
# The full-frame walkthrough of README ("Propagating your own labels") at full size: synthetic
# whole-frame videos with labels every K-th frame -> handprop propagate (default, interpolate, copy)
# -> handprop score against the dense ground truth. Usage:
#   benchmarks/full_frames.sh OUT [SEEDS="0 1"] [EVERY="16"] [VIDEOS=4] [FRAMES=128] [SIZE=320x240]
# Writes OUT/seed<S>_K<K>/{my_videos,annotations/<method>/<video>,scores/<method>} and prints the tables.
set -euo pipefail
OUT=${1:?usage: benchmarks/full_frames.sh OUT [SEEDS] [EVERY] [VIDEOS] [FRAMES] [SIZE]}
SEEDS=${2:-"0 1"}; EVERY=${3:-16}; VIDEOS=${4:-4}; FRAMES=${5:-128}; SIZE=${6:-320x240}
HP=${HANDPROP:-handprop}
for seed in $SEEDS; do
  for K in $EVERY; do
    d="$OUT/seed${seed}_K${K}"
    $HP data synth-videos --out "$d/my_videos" --videos "$VIDEOS" --frames "$FRAMES" --size "$SIZE" \
        --every "$K" --seed "$seed"
    for method in photometric interpolate copy; do
      preds=(); truths=()
      for v in "$d"/my_videos/video_*; do
        name=$(basename "$v")
        $HP propagate --frames "$v/frames" --labels "$v/labels.json" --method "$method" \
            --out "$d/annotations/$method/$name"
        preds+=("$d/annotations/$method/$name"); truths+=("$v/truth")
      done
      $HP score --pred "${preds[@]}" --truth "${truths[@]}" --out "$d/scores/$method"
    done
  done
done
