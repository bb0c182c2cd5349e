#!/usr/bin/env python3
"""The peer: the same VAE in PyTorch (PyTorch's example model: 784-400-z, ReLU, summed BCE + KL, Adam 1e-3), timed
the way `vae bench epoch` times vae-wgpu: the dataset held on the device as bytes, a shuffled index per epoch, no
DataLoader and no host round trip in the timed loop, losses synchronized once per epoch.

    python bench/pytorch_vae.py --data data/mnist --device cpu --batch-sizes 128,1024
    python bench/pytorch_vae.py --device cuda --compile reduce-overhead      # torch.compile with CUDA graphs

It also evaluates a vae-wgpu checkpoint in PyTorch (`--checkpoint run/checkpoint.safetensors`): the test loss of
the loaded weights, to check that checkpoints load into the reference model.

Prints one `RESULT {json}` line per batch size for bench/compare.py.
"""

import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def find(data_dir, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"{data_dir}: {name}(.gz) not found; see data/README.md")


class VAE(nn.Module):
    """PyTorch's examples/vae model, with names the vae-wgpu checkpoints use."""

    def __init__(self, pixels=784, hidden=400, latent=20):
        super().__init__()
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, pixels)

    def forward(self, x):
        h1 = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


def losses(model, x):
    logits, mu, logvar = model(x)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce, kl


def test_loss(model, test, batch):
    model.eval()
    bce_sum = kl_sum = 0.0
    with torch.no_grad():
        for i in range(0, len(test), batch):
            x = test[i : i + batch].float().div_(255.0)
            bce, kl = losses(model, x)
            bce_sum += bce.item()
            kl_sum += kl.item()
    model.train()
    n = len(test)
    return (bce_sum + kl_sum) / n, bce_sum / n, kl_sum / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-sizes", default="128,1024")
    ap.add_argument("--latent", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    ap.add_argument("--reps", type=int, default=3, help="timed epochs (the median is reported)")
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice)")
    ap.add_argument(
        "--compile",
        default="none",
        choices=["none", "default", "reduce-overhead", "max-autotune"],
        help="torch.compile the training step; reduce-overhead uses CUDA graphs on cuda",
    )
    ap.add_argument("--checkpoint", help="evaluate a vae-wgpu checkpoint instead of timing")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    train = read_idx(find(args.data, "train-images-idx3-ubyte")).reshape(-1, 784)
    test = read_idx(find(args.data, "t10k-images-idx3-ubyte")).reshape(-1, 784)
    if args.train_samples:
        train = train[: args.train_samples]
    train, test = train.to(dev), test.to(dev)

    if args.checkpoint:
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(args.checkpoint).items() if not k.startswith("optimizer.")}
        latent, hidden = state["fc21.weight"].shape
        model = VAE(784, hidden, latent).to(dev)
        model.load_state_dict(state)  # strict: every name and shape must match the reference model
        loss, bce, kl = test_loss(model, test, 128)
        print(f"checkpoint {args.checkpoint}: 784-{hidden}-{latent}, test loss {loss:.3f} (bce {bce:.3f} kl {kl:.3f})")
        print("RESULT " + json.dumps({"test_loss": loss, "test_bce": bce, "test_kl": kl}))
        return

    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        model = VAE(784, args.hidden, args.latent).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x):
            opt.zero_grad(set_to_none=True)
            bce, kl = losses(model, x)
            (bce + kl).backward()
            opt.step()
            return (bce + kl).detach()

        if args.compile != "none":
            step = torch.compile(step, mode=args.compile)
        n = len(train)
        times = []
        for epoch in range(args.warmup + args.reps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            perm = torch.randperm(n, device=dev)
            total = torch.zeros((), device=dev)
            for i in range(0, n, batch):
                x = train[perm[i : i + batch]].float().div_(255.0)
                total += step(x)
            avg = total.item() / n  # the epoch's one synchronization
            elapsed = time.perf_counter() - start
            if epoch >= args.warmup:
                times.append(elapsed * 1e3)
        med = statistics.median(times)
        row = {
            "impl": f"pytorch {torch.__version__} {args.device}" + ("" if args.compile == "none" else f" compile={args.compile}"),
            "batch": batch,
            "median_ms": med,
            "samples_per_second": n / (med / 1e3),
            "runs_ms": times,
            "last_train_loss": avg,
            "threads": torch.get_num_threads(),
        }
        print(f"batch {batch:5d}: median {med:10.1f} ms/epoch, {row['samples_per_second']:10.0f} samples/s  (last loss {avg:.2f})")
        print("RESULT " + json.dumps(row))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
