#!/usr/bin/env bash
# 2026-12-06, lavapipe on a 2-vCPU AMD EPYC: `vae bench epoch` before (b9e1019, submissions of a whole log
# interval) and after (submissions sized by time), side by side, alternating whole processes (A B A B ...).
# Then the new build against itself with submissions forced back to whole log intervals
# (VAE_TEST_FAULT=submission-seconds:100), which isolates the cost of one-step submissions on lavapipe.
# The whole-process figures came from a timing harness that runs A and B in turn; any (hyperfine, /usr/bin/time)
# will do.
export NODEVICE_SELECT=1
args=(bench epoch --no-tune --train-samples 4096 --batch-sizes 128,1024)
for round in 1 2 3; do
    /tmp/new/vae "${args[@]}" >>bench-epoch-after.log 2>&1
    /tmp/base/vae "${args[@]}" >>bench-epoch-before.log 2>&1
done
args=(bench epoch --no-tune --train-samples 4096 --batch-sizes 128)
for round in 1 2 3 4; do
    /tmp/new/vae "${args[@]}" >>bench-epoch-paced.log 2>&1
    VAE_TEST_FAULT=submission-seconds:100 /tmp/new/vae "${args[@]}" >>bench-epoch-whole-submissions.log 2>&1
done
