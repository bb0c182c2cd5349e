#!/usr/bin/env python3
"""The peers' test: every peer script of bench/ in its --smoke mode (a few steps on 512 images, batches of 100
and a partial one) on the CPU, and on CUDA where PyTorch or JAX sees it: each must exit 0 and print a RESULT line
with a finite test loss below that of an untrained model (about 543 nats: 784·ln 2). Not part of `scripts/test`
(CI does not install the peers); it fails, with the install line, where PyTorch, JAX or optax is missing.

    .venv/bin/python bench/test_peers.py [--data data/mnist]
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peer_common  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/mnist")
    args = ap.parse_args()
    torch = peer_common.need("torch", "PyTorch")
    jax = peer_common.need("jax", "JAX")
    peer_common.need("optax", "optax")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    cases = []
    for dev in devices:
        torch_modes = [["--mode", "eager"], ["--mode", "compile", "--compile-mode", "default"]]
        if dev == "cuda":
            torch_modes += [["--mode", "compile", "--compile-mode", "reduce-overhead"], ["--mode", "graph"]]
        cases += [("pytorch_vae.py", dev, m) for m in torch_modes]
        has_jax = dev == "cpu" or any(d.platform == "gpu" for d in jax.devices())
        jax_modes = [["--mode", "jit"], ["--mode", "scan"], ["--mode", "scan", "--models", "2"]]
        cases += [("jax_vae.py", dev, m) for m in jax_modes] if has_jax else []
    failures = []
    for script, dev, extra in cases:
        cmd = [sys.executable, os.path.join(HERE, script), "--smoke", "--data", args.data, "--device", dev] + extra
        what = " ".join([script, dev] + extra)
        p = subprocess.run(cmd, capture_output=True, text=True)
        rows = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        ok = p.returncode == 0 and rows and all(0 < r["test_loss"] < 543 for r in rows)
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": test loss {rows[0]['test_loss']:.2f}" if rows else ""))
        if not ok:
            failures.append(what)
            sys.stdout.write(p.stdout + p.stderr)
    if failures:
        sys.exit(f"test_peers.py: {len(failures)} of {len(cases)} failed: {failures}")
    print(f"test_peers.py: all {len(cases)} peers passed")


if __name__ == "__main__":
    main()
