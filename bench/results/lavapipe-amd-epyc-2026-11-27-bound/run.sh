#!/usr/bin/env bash
# Two builds of vae side by side on lavapipe, alternating: untuned at batch 128 (three rounds of 10 steps) and
# batch 1 (two rounds of 200 steps, for the host's cost), then each build tuned twice, each tuning into a cache of
# its own, and profiled with it. Usage: run.sh BEFORE_BINARY AFTER_BINARY OUT_DIR
set -u
declare -A bin=([before]=$1 [after]=$2)
out=$3
mkdir -p "$out"
trace=$(mktemp)
profile() { "${bin[$1]}" profile --latent 20 --trace "$trace" "${@:3}" >"$out/$2.txt" 2>&1; }
for r in 1 2 3; do
    for b in before after; do profile $b "untuned-b128-$b-$r" --steps 10 --no-tune; done
done
for r in 1 2; do
    for b in before after; do profile $b "untuned-b1-$b-$r" --steps 200 --batch-size 1 --no-tune; done
done
for r in 1 2; do
    for b in before after; do profile $b "tuned-b128-$b-$r" --steps 10 --tune-cache "$out/cache-$b-$r.txt"; done
done
rm -f "$trace"
# One line per run: dispatches, host µs, GPU ms and wall-clock ms per step.
for f in "$out"/*.txt; do
    case $f in */cache-*) continue ;; esac
    awk -v run="$(basename "$f" .txt)" '
        /^dispatches per training step:/ { d = $NF }
        /^host time to record/ { h = $(NF - 1) }
        /^GPU time per step/ { g = $(NF - 1) / 1000 }
        /^wall-clock per step/ { w = $(NF - 1) / 1000 }
        END { printf "%-24s %3s dispatches %9.1f host µs %9.1f GPU ms %9.1f wall ms\n", run, d, h, g, w }' "$f"
done
