#!/usr/bin/env python3
"""The PyTorch peers: PyTorch's example VAE (784-400-z, ReLU, nn.Linear's initialization, summed BCE + KL, Adam
1e-3), timed as bench/peer_common.py says, in one of three modes:

    --mode eager      the step as written; Adam fused (fused=True) on CUDA, multi-tensor (foreach) on the CPU;
                      the batch gathered on the device from the epoch's permutation
    --mode compile    torch.compile of the whole step: the gather, forward, backward, zero_grad and the
                      optimizer's step (--compile-mode reduce-overhead, max-autotune or default)
    --mode graph      CUDA only: the whole step captured once in a CUDA graph (and once more for the last partial
                      batch) and replayed: static buffers, the gather inside the graph from a device-side offset,
                      capturable fused Adam, no host synchronization in the epoch

    python bench/pytorch_vae.py --device cpu --mode eager
    python bench/pytorch_vae.py --device cuda --mode graph

It also evaluates a vae-wgpu checkpoint in PyTorch (`--checkpoint run/checkpoint.safetensors`): the test loss of
the loaded weights, to check that checkpoints load into the reference model.

Prints one `RESULT {json}` line per batch size for bench/compare.py.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common  # noqa: E402

torch = peer_common.need("torch", "PyTorch")
nn = torch.nn
F = torch.nn.functional


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


def test_loss(model, test, batch=1000):
    """Per-example (loss, bce, kl) on `test` (uint8 on the device), z sampled: the ELBO vae-wgpu reports."""
    model.eval()
    bce_sum = kl_sum = 0.0
    with torch.no_grad():
        for i in range(0, len(test), batch):
            bce, kl = losses(model, test[i : i + batch].float().div_(255.0))
            bce_sum += bce.item()
            kl_sum += kl.item()
    model.train()
    n = len(test)
    return (bce_sum + kl_sum) / n, bce_sum / n, kl_sum / n


def batches(n, batch):
    """(start, rows) of each step of an epoch: full batches, then the remainder."""
    return [(i, min(batch, n - i)) for i in range(0, n, batch)]


def optimizer(model, dev, capturable=False):
    if dev.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=capturable)
    return torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


class Eager:
    """The step as written; `compile_mode` wraps the whole of it (gather to optimizer step) in torch.compile."""

    def __init__(self, model, train, dev, compile_mode=None):
        self.model, self.train, self.dev = model, train, dev
        self.opt = optimizer(model, dev)
        step = self.step
        self.run = torch.compile(step, mode=compile_mode) if compile_mode else step

    def step(self, idx):
        x = self.train.index_select(0, idx).float().div_(255.0)
        self.opt.zero_grad(set_to_none=True)
        bce, kl = losses(self.model, x)
        loss = bce + kl
        loss.backward()
        self.opt.step()
        return loss.detach()

    def epoch(self, n, batch):
        perm = torch.randperm(n, device=self.dev)
        total = torch.zeros((), device=self.dev)
        for start, rows in batches(n, batch):
            total += self.run(perm[start : start + rows])
        return total.item() / n  # the epoch's one synchronization


class Graph:
    """The whole step in one CUDA graph: static buffers (the data, the permutation, a device-side offset), the
    gather from the offset inside the graph, capturable fused Adam; one graph for full batches and one for the
    last partial batch, replayed with no host synchronization until the epoch's loss is read."""

    def __init__(self, model, train, dev, n, batch):
        self.model, self.train, self.dev = model, train, dev
        self.opt = optimizer(model, dev, capturable=True)
        self.perm = torch.randperm(n, device=dev)
        self.offset = torch.zeros((), dtype=torch.long, device=dev)
        self.total = torch.zeros((), device=dev)
        self.steps = batches(n, batch)
        # Warm-up on a side stream, as capture requires, then put the model and Adam back as they were: the
        # captured run is the same run as the eager one.
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        sizes = sorted({rows for _, rows in self.steps})
        ranges = {rows: torch.arange(rows, device=dev) for rows in sizes}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for rows in sizes:
                for _ in range(3):
                    self.opt.zero_grad(set_to_none=True)
                    self.step(ranges[rows], rows)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
            for state in self.opt.state.values():
                for v in state.values():
                    v.zero_()
        self.offset.zero_()
        self.total.zero_()
        self.graphs = {}
        pool = None
        for rows in sizes:
            g = torch.cuda.CUDAGraph()
            # The gradients are allocated inside the capture: each replay writes them anew.
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(g, pool=pool):
                self.step(ranges[rows], rows)
            pool = g.pool()
            self.graphs[rows] = g

    def step(self, arange, rows):
        idx = self.perm.index_select(0, self.offset + arange)
        x = self.train.index_select(0, idx).float().div_(255.0)
        bce, kl = losses(self.model, x)
        loss = bce + kl
        loss.backward()
        self.opt.step()
        self.offset += rows
        self.total += loss.detach()

    def epoch(self, n, batch):
        self.perm.copy_(torch.randperm(n, device=self.dev))
        self.offset.zero_()
        self.total.zero_()
        for _, rows in self.steps:
            self.graphs[rows].replay()
        return self.total.item() / n  # the epoch's one synchronization


def main():
    ap = peer_common.parser(__doc__)
    ap.add_argument("--mode", default="eager", choices=["eager", "compile", "graph"])
    ap.add_argument(
        "--compile-mode",
        default="reduce-overhead",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="torch.compile's mode for --mode compile (reduce-overhead: with CUDA graphs on cuda)",
    )
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice)")
    ap.add_argument("--checkpoint", help="evaluate a vae-wgpu checkpoint instead of timing")
    args = peer_common.parse(ap)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("pytorch_vae.py: --device cuda, but this PyTorch sees no CUDA device")
    if args.mode == "graph" and args.device != "cuda":
        sys.exit("pytorch_vae.py: --mode graph captures CUDA graphs: it needs --device cuda")
    dev = torch.device(args.device)
    train, test = (torch.from_numpy(a.copy()).to(dev) for a in peer_common.mnist(args))

    if args.checkpoint:
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(args.checkpoint).items() if not k.startswith("optimizer.")}
        latent, hidden = state["fc21.weight"].shape
        model = VAE(train.shape[1], hidden, latent).to(dev)
        model.load_state_dict(state)  # strict: every name and shape must match the reference model
        loss, bce, kl = test_loss(model, test, 128)
        print(f"checkpoint {args.checkpoint}: 784-{hidden}-{latent}, test loss {loss:.3f} (bce {bce:.3f} kl {kl:.3f})")
        print(f'RESULT {{"test_loss": {loss}, "test_bce": {bce}, "test_kl": {kl}}}')
        return

    impl = {"eager": "pytorch eager", "compile": f"pytorch compile({args.compile_mode})", "graph": "pytorch cuda-graph"}
    n = len(train)
    for batch in args.batches:
        torch.manual_seed(args.seed)
        model = VAE(train.shape[1], args.hidden, args.latent).to(dev)
        sync(dev)
        setup = time.perf_counter()
        if args.mode == "graph":
            trainer = Graph(model, train, dev, n, batch)
        else:
            trainer = Eager(model, train, dev, args.compile_mode if args.mode == "compile" else None)
        sync(dev)
        setup_ms = (time.perf_counter() - setup) * 1e3
        times = []
        for _ in range(args.warmup + args.reps):
            sync(dev)
            start = time.perf_counter()
            trainer.epoch(n, batch)
            times.append((time.perf_counter() - start) * 1e3)
        extra = {"torch": torch.__version__, "threads": torch.get_num_threads(), "setup_ms": setup_ms}
        if dev.type == "cuda":
            extra["gpu"] = torch.cuda.get_device_name()
        peer_common.report(impl[args.mode], args, batch, n, times[args.warmup :], times[0], test_loss(model, test), extra)


if __name__ == "__main__":
    main()
