#!/usr/bin/env python3
"""vae-wgpu beside every peer at its fastest, on one machine, in one go: `vae bench epoch` and the PyTorch and JAX
peers (bench/pytorch_vae.py, bench/jax_vae.py), the same model (784-400-20 by default), batch sizes, epochs and
protocol (bench/peer_common.py), in alternating rounds (each round runs every implementation once, starting one
further along the list than the round before). One table: each implementation's median epoch time over the rounds
(each round's figure the median of its timed epochs), its first epoch (compilation included), its test loss after
the same epochs (the mean over the rounds, round r training with seed r: one seed's loss varies by about a nat on
a subset), and how many times vae-wgpu's speed it runs at. It fails when the test losses of one batch size
spread over more than 1 nat: a fast peer must not be a broken one.

    python bench/compare.py --device cpu --train-samples 10000 --log-dir bench/results/X
    python bench/compare.py --vae .gpu/vae --data .gpu/mnist --device cuda --log-dir report/compare

The peers: PyTorch eager (fused Adam on CUDA, foreach on the CPU), torch.compile of the whole step in each mode of
--compile-modes, PyTorch with the whole step in one CUDA graph (CUDA only), JAX with the step under jit and JAX
with the whole epoch as one lax.scan. Install: python3 -m venv .venv && .venv/bin/pip install torch jax optax
safetensors
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, log):
    """Runs `cmd`, its output going to `log` as it comes (and to stderr on failure); returns its RESULT rows."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = []
    with open(log or os.devnull, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            out.append(line)
            f.write(line)
            f.flush()
        code = p.wait()
        f.write(f"exit {code}\n")
    if code != 0:
        sys.stderr.write("".join(out))
        sys.exit(f"compare.py: command failed ({code}): {' '.join(cmd)}")
    return [json.loads(l[len("RESULT ") :]) for l in out if l.startswith("RESULT ")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", default="target/release/vae")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-sizes", default="128,1024")
    ap.add_argument("--latent", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads")
    ap.add_argument("--compile-modes", default="reduce-overhead,max-autotune", help="torch.compile modes to time")
    ap.add_argument("--only", default=None,
                    help="comma-separated implementations to run, e.g. 'vae-wgpu,jax jit' (default: all)")
    ap.add_argument("--adapter", default=None, help="vae --adapter")
    ap.add_argument("--vae-arg", action="append", default=[], help="an extra argument for vae bench epoch")
    ap.add_argument("--log-dir", default=None, help="write every command's output here, one log per implementation")
    ap.add_argument("--from-logs", default=None, metavar="DIR",
                    help="run nothing: print the table of an earlier run's --log-dir")
    args = ap.parse_args()

    common = ["--data", args.data, "--latent", str(args.latent), "--hidden", str(args.hidden), "--batch-sizes",
              args.batch_sizes, "--warmup", str(args.warmup), "--reps", str(args.reps)]
    if args.train_samples:
        common += ["--train-samples", str(args.train_samples)]
    torch_cmd = [args.python, os.path.join(HERE, "pytorch_vae.py"), "--device", args.device] + common
    if args.threads:
        torch_cmd += ["--threads", str(args.threads)]
    jax_cmd = [args.python, os.path.join(HERE, "jax_vae.py"), "--device", args.device] + common
    vae_cmd = [args.vae, "bench", "epoch"] + common + (["--adapter", args.adapter] if args.adapter else [])
    impls = [("vae-wgpu", vae_cmd + args.vae_arg), ("pytorch eager", torch_cmd + ["--mode", "eager"])]
    for mode in [m for m in args.compile_modes.split(",") if m]:
        impls.append((f"pytorch compile({mode})", torch_cmd + ["--mode", "compile", "--compile-mode", mode]))
    left_out = []
    if args.device == "cuda":
        impls.append(("pytorch cuda-graph", torch_cmd + ["--mode", "graph"]))
    else:
        left_out.append("pytorch cuda-graph: a CUDA graph needs CUDA (--device cuda)")
    impls += [("jax jit", jax_cmd + ["--mode", "jit"]), ("jax scan", jax_cmd + ["--mode", "scan"])]
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in [name for name, _ in impls]]
        if unknown:
            sys.exit(f"compare.py: --only names {unknown}, which is none of: " + ", ".join(n for n, _ in impls))
        impls = [i for i in impls if i[0] in wanted]
    if args.log_dir and not args.from_logs:
        os.makedirs(args.log_dir, exist_ok=True)

    if args.from_logs:
        results = from_logs(args.from_logs, [name for name, _ in impls])
    else:
        results = {}  # (impl, batch) -> rows, one per round
        for r in range(args.rounds):
            order = impls[r % len(impls) :] + impls[: r % len(impls)]
            for name, cmd in order:
                cmd = cmd + ["--seed", str(r + 1)]
                log = os.path.join(args.log_dir, log_name(name)) if args.log_dir else None
                for row in run(cmd, log):
                    results.setdefault((name, row["batch"]), []).append(row)
    if not results:
        sys.exit("compare.py: no RESULT rows to tabulate")
    failed = table(results, [name for name, _ in impls], [int(b) for b in args.batch_sizes.split(",")])
    for why in left_out:
        print(f"left out: {why}")
    if failed:
        sys.exit(f"compare.py: at batch {failed} the test losses spread over more than 1 nat: one of the "
                 "implementations does not train the same model, or the rounds' seeds are too few for the "
                 "seed-to-seed spread (the 'seeds' column): run more --rounds")


def log_name(name):
    """The log file of an implementation in --log-dir."""
    return name.replace(" ", "_").replace("(", "-").replace(")", "") + ".log"


def from_logs(log_dir, names):
    """The RESULT rows of an earlier run's logs (--log-dir), each implementation's in the order its rounds ran."""
    results = {}
    for name in names:
        path = os.path.join(log_dir, log_name(name))
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                if line.startswith("RESULT "):
                    row = json.loads(line[len("RESULT ") :])
                    results.setdefault((name, row["batch"]), []).append(row)
    return results


def table(results, names, batches):
    """Prints the table of `results` ((impl, batch) -> one row per round); returns the batch sizes whose mean test
    losses spread over more than 1 nat."""
    first = next(iter(results.values()))[0]
    rounds = max(len(rows) for rows in results.values())
    print()
    vae_rows = [rows[0] for (name, _), rows in results.items() if name == "vae-wgpu"]
    if vae_rows:
        print(f"vae-wgpu on {vae_rows[0]['adapter']}")
    for name in ("pytorch eager", "jax jit"):
        rows = next((rows for (n, _), rows in results.items() if n == name), None)
        versions = {k: rows[0][k] for k in ("torch", "jax", "optax", "gpu", "threads", "jax_device")
                    if k in rows[0]} if rows else {}
        if versions:
            print(f"{name.split()[0]}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{first['samples']} training examples, {first['epochs']} epochs per run (warm-up included), {rounds} "
          "rounds (round r: seed r); ms/epoch: the median of the rounds' medians (min-max of the rounds); test loss: "
          "the mean over the rounds' seeds; seeds: the lowest and highest of one seed's test loss")
    print(f"{'implementation':<32} {'batch':>6} {'ms/epoch':>10} {'(min-max)':>17} {'samples/s':>10} "
          f"{'first epoch ms':>15} {'test loss':>10} {'seeds':>17} {'vs vae-wgpu':>14}")
    failed = []
    for b in batches:
        ours = results.get(("vae-wgpu", b))
        ours_ms = statistics.median(r["median_ms"] for r in ours) if ours else None
        losses = []
        for name in names:
            rows = results.get((name, b))
            if not rows:
                continue
            ms = [r["median_ms"] for r in rows]
            med = statistics.median(ms)
            known = [r["test_loss"] for r in rows if r["test_loss"] is not None]
            loss = statistics.mean(known) if known else None
            if loss is not None:
                losses.append((loss, name))
            firsts = statistics.median(r["first_epoch_ms"] for r in rows)
            ratio = "" if name == "vae-wgpu" or ours_ms is None else f"{med / ours_ms:.2f}x slower" \
                if med >= ours_ms else f"{ours_ms / med:.2f}x faster"
            span = f"({min(ms):.0f}-{max(ms):.0f})"
            loss_s = "-" if loss is None else f"{loss:.3f}"
            seeds = f"{min(known):.2f}-{max(known):.2f}" if known else "-"
            print(f"{name:<32} {b:>6} {med:>10.1f} {span:>17} {rows[0]['samples'] / (med / 1e3):>10.0f} "
                  f"{firsts:>15.0f} {loss_s:>10} {seeds:>17} {ratio:>14}")
        if losses:
            spread = max(l for l, _ in losses) - min(l for l, _ in losses)
            print(f"{'':<32} {b:>6} mean test losses within {spread:.2f} nats "
                  f"(lowest {min(losses)[1]}, highest {max(losses)[1]})")
            if spread > 1.0:
                failed.append(b)
    return failed


if __name__ == "__main__":
    main()
