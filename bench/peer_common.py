"""What every peer of vae-wgpu shares (bench/pytorch_vae.py, bench/jax_vae.py): MNIST read from its IDX files, the
command line, the timing protocol and the `RESULT {json}` line that bench/compare.py reads.

The protocol, the same for every peer and for `vae bench epoch`: the training set held on the device as bytes; each
epoch a fresh shuffle (a permutation drawn on the device) and every batch, the last partial one included, gathered
on the device from it; the epoch's loss read back once, at its end. `--warmup` untimed epochs first (they include
compilation, reported apart as `first_epoch_ms`), then `--reps` timed ones; the median is the figure. After the
epochs, the test loss (the ELBO with z sampled, summed BCE + KL per example, as vae-wgpu reports it) on the test
set, so that a fast peer cannot be a broken one.
"""

import argparse
import gzip
import json
import os
import statistics
import struct
import sys

INSTALL = "python3 -m venv .venv && .venv/bin/pip install torch jax optax safetensors"


def need(module, what):
    """Imports `module`, or exits with the install line."""
    try:
        return __import__(module)
    except ImportError as e:
        sys.exit(f"{what} is not installed here ({e}). Install the peers into a virtual environment:\n  {INSTALL}")


def read_idx(path):
    """An IDX file of unsigned bytes as (bytes, dims)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return data[4 + 4 * ndim :], dims


def find(data_dir, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"{data_dir}: {name}(.gz) not found; see data/README.md (or run `vae fetch --data {data_dir}`)")


def mnist(args):
    """(train, test) as numpy uint8 arrays of shape (n, pixels), cut to --train-samples / --test-samples."""
    import numpy as np

    out = []
    for name, n in (("train-images-idx3-ubyte", args.train_samples), ("t10k-images-idx3-ubyte", args.test_samples)):
        data, dims = read_idx(find(args.data, name))
        images = np.frombuffer(data, dtype=np.uint8).reshape(dims[0], -1)
        out.append(images[:n] if n else images)
    return out


def parser(description):
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-sizes", default="128,1024")
    ap.add_argument("--latent", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs first (compilation included)")
    ap.add_argument("--reps", type=int, default=3, help="timed epochs (the median is reported)")
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--test-samples", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a few steps on a tiny subset (512 training images, batches of 100 and a partial one, 256 test "
        "images): the test mode bench/test_peers.py runs",
    )
    return ap


def parse(ap):
    args = ap.parse_args()
    if args.smoke:
        args.train_samples, args.test_samples = 512, 256
        args.batch_sizes, args.warmup, args.reps = "100", 1, 1
    args.batches = [int(b) for b in args.batch_sizes.split(",")]
    return args


def report(impl, args, batch, n, times_ms, first_ms, test, extra=None):
    """Prints the human line and the `RESULT {json}` line of one batch size. `test` is (loss, bce, kl) per
    example on the test set after every epoch."""
    med = statistics.median(times_ms)
    row = {
        "impl": impl,
        "device": args.device,
        "batch": batch,
        "samples": n,
        "epochs": args.warmup + args.reps,
        "median_ms": med,
        "samples_per_second": n / (med / 1e3),
        "runs_ms": times_ms,
        "first_epoch_ms": first_ms,
        "test_loss": test[0],
        "test_bce": test[1],
        "test_kl": test[2],
    }
    row.update(extra or {})
    print(
        f"{impl}: batch {batch:5d}: median {med:10.1f} ms/epoch, {row['samples_per_second']:10.0f} samples/s, "
        f"first epoch {first_ms:.0f} ms, test loss {test[0]:.3f} after {row['epochs']} epochs"
    )
    print("RESULT " + json.dumps(row))
    sys.stdout.flush()
    if not all(map(lambda v: v == v and abs(v) < float("inf"), test)):
        sys.exit(f"{impl}: the test loss is not finite: {test}")
