#!/usr/bin/env python3
"""The JAX peers: the same VAE as PyTorch's example (784-400-z, ReLU, nn.Linear's initialization U(±1/√fan_in),
summed BCE + KL, Adam 1e-3 from optax), timed as bench/peer_common.py says, in one of two modes:

    --mode jit     the step under jax.jit with the parameters and Adam's state donated; the host calls it once
                   a step, with the epoch's permutation (drawn on the device) and the step's offset into it
    --mode scan    the whole epoch as one jitted call: the permutation, a jax.lax.scan over the full batches and
                   the last partial batch, one call from the host per epoch

With --models M (scan mode), M models (seeds seed..seed+M-1, each its own initialization and noise) train
together over the same batches, jax.vmap over their parameters and Adam's state inside the scan: JAX's answer
to `vae sweep`. The reported samples/s are summed over the models, the test loss is the first model's.

    python bench/jax_vae.py --device cpu --mode scan

Prints one `RESULT {json}` line per batch size for bench/compare.py.
"""

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common  # noqa: E402

jax = peer_common.need("jax", "JAX")
optax = peer_common.need("optax", "optax")
jnp = jax.numpy
lax = jax.lax


def init(key, pixels, hidden, latent):
    """nn.Linear's default initialization: weight (out, in) and bias ~ U(-1/√in, 1/√in)."""

    def linear(key, fan_in, fan_out):
        kw, kb = jax.random.split(key)
        bound = 1.0 / fan_in**0.5
        return {
            "weight": jax.random.uniform(kw, (fan_out, fan_in), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
        }

    k = jax.random.split(key, 5)
    return {
        "fc1": linear(k[0], pixels, hidden),
        "fc21": linear(k[1], hidden, latent),
        "fc22": linear(k[2], hidden, latent),
        "fc3": linear(k[3], latent, hidden),
        "fc4": linear(k[4], hidden, pixels),
    }


def dense(p, x):
    return x @ p["weight"].T + p["bias"]


def losses(params, x, eps):
    """Summed BCE (with logits) and KL of a batch, z = μ + ε·σ."""
    h1 = jax.nn.relu(dense(params["fc1"], x))
    mu, logvar = dense(params["fc21"], h1), dense(params["fc22"], h1)
    z = mu + eps * jnp.exp(0.5 * logvar)
    logits = dense(params["fc4"], jax.nn.relu(dense(params["fc3"], z)))
    bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x))
    kl = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar))
    return bce, kl


OPT = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8)


def step(params, opt_state, data, perm, start, key, rows, latent):
    """One training step on rows perm[start : start + rows] of `data` (uint8), gathered on the device."""
    idx = lax.dynamic_slice(perm, (start,), (rows,))
    x = data[idx].astype(jnp.float32) / 255.0
    eps = jax.random.normal(key, (rows, latent), jnp.float32)

    def total(p):
        bce, kl = losses(p, x, eps)
        return bce + kl

    loss, grads = jax.value_and_grad(total)(params)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnames=("n",))
def permutation(key, epoch, n):
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


@functools.partial(jax.jit, static_argnames=("rows", "latent"), donate_argnums=(0, 1, 2))
def jit_step(params, opt_state, total, data, perm, start, key, t, rows, latent):
    params, opt_state, loss = step(params, opt_state, data, perm, start, jax.random.fold_in(key, t), rows, latent)
    return params, opt_state, total + loss


@functools.partial(jax.jit, static_argnames=("n", "batch", "latent"), donate_argnums=(0, 1))
def scan_epoch(params, opt_state, data, shuffle_key, noise_key, epoch, t0, n, batch, latent):
    """A whole epoch: its permutation, the full batches under lax.scan, then the partial batch."""
    perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
    full = n // batch

    def body(carry, i):
        params, opt_state, total = carry
        key = jax.random.fold_in(noise_key, t0 + i)
        params, opt_state, loss = step(params, opt_state, data, perm, i * batch, key, batch, latent)
        return (params, opt_state, total + loss), None

    carry = (params, opt_state, jnp.zeros((), jnp.float32))
    (params, opt_state, total), _ = lax.scan(body, carry, jnp.arange(full))
    if n % batch:
        key = jax.random.fold_in(noise_key, t0 + full)
        params, opt_state, loss = step(params, opt_state, data, perm, full * batch, key, n % batch, latent)
        total = total + loss
    return params, opt_state, total


@functools.partial(jax.jit, static_argnames=("n", "batch", "latent"), donate_argnums=(0, 1))
def scan_epoch_models(params, opt_state, data, shuffle_key, noise_keys, epoch, t0, n, batch, latent):
    """`scan_epoch` for M models at once: params, opt_state and noise_keys carry a leading model axis, and each
    step is one vmapped step of every model over the same batch."""
    perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
    full = n // batch

    def models_step(params, opt_state, start, t, rows):
        keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(noise_keys)
        one = lambda p, o, k: step(p, o, data, perm, start, k, rows, latent)  # noqa: E731
        return jax.vmap(one)(params, opt_state, keys)

    def body(carry, i):
        params, opt_state, total = carry
        params, opt_state, loss = models_step(params, opt_state, i * batch, t0 + i, batch)
        return (params, opt_state, total + loss), None

    m = noise_keys.shape[0]
    carry = (params, opt_state, jnp.zeros((m,), jnp.float32))
    (params, opt_state, total), _ = lax.scan(body, carry, jnp.arange(full))
    if n % batch:
        params, opt_state, loss = models_step(params, opt_state, full * batch, t0 + full, n % batch)
        total = total + loss
    return params, opt_state, total


@functools.partial(jax.jit, static_argnames=("latent",))
def eval_batch(params, x, key, latent):
    x = x.astype(jnp.float32) / 255.0
    eps = jax.random.normal(key, (x.shape[0], latent), jnp.float32)
    return losses(params, x, eps)


def test_loss(params, test, key, latent, batch=1000):
    """Per-example (loss, bce, kl) on `test`, z sampled: the ELBO vae-wgpu reports."""
    bce_sum = kl_sum = 0.0
    for j, i in enumerate(range(0, len(test), batch)):
        bce, kl = eval_batch(params, test[i : i + batch], jax.random.fold_in(key, j), latent)
        bce_sum += float(bce)
        kl_sum += float(kl)
    n = len(test)
    return (bce_sum + kl_sum) / n, bce_sum / n, kl_sum / n


def main():
    ap = peer_common.parser(__doc__)
    ap.add_argument("--mode", default="scan", choices=["jit", "scan"])
    ap.add_argument("--models", type=int, default=1, help="models trained together under jax.vmap (scan mode)")
    args = peer_common.parse(ap)
    if args.models < 1 or (args.models > 1 and args.mode != "scan"):
        sys.exit("jax_vae.py: --models must be at least 1, and above 1 only with --mode scan")
    platform = "gpu" if args.device == "cuda" else "cpu"
    try:
        device = jax.devices(platform)[0]
    except RuntimeError as e:
        sys.exit(f"jax_vae.py: --device {args.device}, but JAX has no {platform} device ({e})")
    train_np, test_np = peer_common.mnist(args)
    n, pixels = train_np.shape
    with jax.default_device(device):
        train, test = jax.device_put(train_np, device), jax.device_put(test_np, device)
        for batch in args.batches:
            if args.models > 1:
                models(args, train, test, n, pixels, batch, device)
                continue
            key = jax.random.PRNGKey(args.seed)
            k_init, k_shuffle, k_noise, k_test = jax.random.split(key, 4)
            params = init(k_init, pixels, args.hidden, args.latent)
            opt_state = OPT.init(params)
            t = 0
            times = []
            for epoch in range(args.warmup + args.reps):
                start = time.perf_counter()
                if args.mode == "scan":
                    params, opt_state, total = scan_epoch(
                        params, opt_state, train, k_shuffle, k_noise, epoch, t, n, batch, args.latent
                    )
                    t += -(-n // batch)
                else:
                    perm = permutation(k_shuffle, epoch, n)
                    total = jnp.zeros((), jnp.float32)
                    for s in range(0, n, batch):
                        rows = min(batch, n - s)
                        params, opt_state, total = jit_step(
                            params, opt_state, total, train, perm, s, k_noise, t, rows, args.latent
                        )
                        t += 1
                float(total)  # the epoch's one synchronization
                times.append((time.perf_counter() - start) * 1e3)
            extra = {"jax": jax.__version__, "optax": optax.__version__, "jax_device": str(device)}
            result = test_loss(params, test, k_test, args.latent)
            peer_common.report(f"jax {args.mode}", args, batch, n, times[args.warmup :], times[0], result, extra)


def models(args, train, test, n, pixels, batch, device):
    """--models M: M models in one vmapped scan per epoch, timed and reported like one."""
    keys = [jax.random.split(jax.random.PRNGKey(args.seed + k), 4) for k in range(args.models)]
    stack = lambda trees: jax.tree_util.tree_map(lambda *v: jnp.stack(v), *trees)  # noqa: E731
    params = stack([init(k[0], pixels, args.hidden, args.latent) for k in keys])
    opt_state = jax.vmap(OPT.init)(params)
    noise_keys = jnp.stack([k[2] for k in keys])
    k_shuffle, k_test = keys[0][1], keys[0][3]
    t, times = 0, []
    for epoch in range(args.warmup + args.reps):
        start = time.perf_counter()
        params, opt_state, total = scan_epoch_models(
            params, opt_state, train, k_shuffle, noise_keys, epoch, t, n, batch, args.latent
        )
        t += -(-n // batch)
        total.block_until_ready()  # the epoch's one synchronization
        times.append((time.perf_counter() - start) * 1e3)
    first = jax.tree_util.tree_map(lambda v: v[0], params)
    result = test_loss(first, test, k_test, args.latent)
    extra = {
        "jax": jax.__version__,
        "optax": optax.__version__,
        "jax_device": str(device),
        "models": args.models,
    }
    # Samples per second summed over the models: the reported sample count is M epochs' worth.
    peer_common.report(
        f"jax scan vmap x{args.models}", args, batch, n * args.models, times[args.warmup :], times[0], result, extra
    )


if __name__ == "__main__":
    main()
