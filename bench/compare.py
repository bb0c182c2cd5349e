#!/usr/bin/env python3
"""vae-wgpu against PyTorch on the same machine, in one go: epoch time for the full training set at each batch size,
and the ratio. Runs `vae bench epoch` and bench/pytorch_vae.py (eager, and with --compile on CUDA), then prints a
table. Same model (784-400-20), same batch sizes, same warm-up and repetitions; the medians are compared.

    python bench/compare.py --vae target/release/vae --data data/mnist --device cpu --threads 2
    python bench/compare.py --vae .gpu/vae --data .gpu/mnist --device cuda
"""

import argparse
import json
import re
import subprocess
import sys
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write(p.stdout + p.stderr)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", default="target/release/vae")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads")
    ap.add_argument("--batch-sizes", default="128,1024")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--adapter", default=None, help="vae --adapter")
    ap.add_argument("--compile", default=None, help="also time PyTorch with this torch.compile mode")
    ap.add_argument("--vae-arg", action="append", default=[], help="an extra argument for vae bench epoch (repeatable)")
    args = ap.parse_args()

    # The model is the PyTorch example's, 784-400-20, on both sides (vae's own default latent size is 2).
    common = ["--latent", "20", "--hidden", "400", "--batch-sizes", args.batch_sizes, "--warmup", str(args.warmup),
              "--reps", str(args.reps)]
    if args.train_samples:
        common += ["--train-samples", str(args.train_samples)]

    rows = {}  # (impl, batch) -> median ms
    vae_cmd = [args.vae, "bench", "epoch", "--data", args.data] + common
    if args.adapter:
        vae_cmd += ["--adapter", args.adapter]
    vae_cmd += args.vae_arg
    out = run(vae_cmd)
    adapter = next((l for l in out.splitlines() if l.startswith("epoch benchmark on")), "")
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            rows[("vae-wgpu", int(m.group(1)))] = float(m.group(2))

    variants = [[]]
    if args.compile or args.device == "cuda":
        variants.append(["--compile", args.compile or "reduce-overhead"])
    torch_impls = []
    for extra in variants:
        cmd = [args.python, os.path.join(HERE, "pytorch_vae.py"), "--data", args.data, "--device", args.device] + common + extra
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        for line in run(cmd).splitlines():
            if line.startswith("RESULT "):
                r = json.loads(line[len("RESULT "):])
                rows[(r["impl"], r["batch"])] = r["median_ms"]
                if r["impl"] not in torch_impls:
                    torch_impls.append(r["impl"])

    print()
    print(adapter)
    print(f"{'implementation':<48} {'batch':>6} {'ms/epoch':>10} {'samples/s':>11} {'vae-wgpu speed-up':>18}")
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        ours = rows.get(("vae-wgpu", b))
        for impl in ["vae-wgpu"] + torch_impls:
            ms = rows.get((impl, b))
            if ms is None:
                continue
            n = args.train_samples or 60000
            ratio = "" if impl == "vae-wgpu" or ours is None else f"{ms / ours:.2f}x"
            print(f"{impl:<48} {b:>6} {ms:>10.1f} {n / (ms / 1e3):>11.0f} {ratio:>18}")


if __name__ == "__main__":
    main()
