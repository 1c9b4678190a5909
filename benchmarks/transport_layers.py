"""Trained networks as transport: neural DAE stacks against the exact flow, and per-layer
drift/diffusion of residual networks (theory/transport.py, docs/theory_transport.md).

Usage (from the repository root):

    python benchmarks/transport_layers.py [--quick] [--seed 0] [--stack-seeds 1] [--json out.json]

Three parts, every number against a baseline or an exact answer computed in the same run:

1. **Neural DAE stacks** in 2-D (a four-component mixture) and 3-D (a three-component
   mixture): `L` MLP denoisers trained with optax, layer by layer, each of noise `t / L`.
   Their particles are compared with the exact flow `dx/dt = grad log mu_t` (RK4 on the known
   mixture) at `t`, and so are the particles of `L` ideal (oracle) DAE layers, which carry the
   same depth error without the training error. Distances: the particle-wise RMS error
   divided by the exact flow's RMS displacement (all three maps move the same particles),
   sliced W2 and the entropic W2 (debiased Sinkhorn, `eps = 0.01`, on a subsample), next to
   the baselines W2(start, exact) (no transport) and W2 between two independent samples of
   the exact `mu_t` (the sampling floor of the subsample size). With ott-jax importable, its
   Sinkhorn divergence of the same pair is printed as a cross-check.
2. **Per-layer fits with exact answers**: `d rho/dt = -div((c + G x) rho) + D : Hess rho`
   fitted between consecutive layers (`layer_fits`, mollified derivatives of cloud-in-cell
   densities) for (a) an affine residual stack (exact `(G, c)` = logm generator, `D = 0`),
   (b) ideal DAE layers on a Gaussian (drift not identifiable: `D` alone, exact `D_k` from
   the covariance recursion), (c) the exact deep-DAE flow of the 2-D mixture (`D = -I`, no
   drift), (d) ideal and (e) trained neural DAE layers on the mixture (`D = -I` up to the
   depth bias `~1.5 tau / s`).
3. **A trained deep residual network** (20 blocks, two moons): training and test accuracy,
   then per layer the fitted `c`, `G`, `D` and the residual with and without `D`, beside the
   particle-wise least-squares affine fit of the block's velocity `f_l` (what `G` would be if
   the layer were affine). No exact answer exists here: these are reported, not checked.

Full size: 141 s wall, 138 s CPU (two shared cores); with `--stack-seeds 3` 248 s wall;
`--quick` about 70 s.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mollijax as mj  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402

from theory import transport as tr  # noqa: E402

MIX_2D = dict(weights=[0.3, 0.2, 0.25, 0.25],
              means=[[-1.5, -1.5], [1.5, -1.5], [-1.5, 1.5], [1.5, 1.5]],
              covs=[0.6, 0.8, 0.7, 0.5])
MIX_3D = dict(weights=[0.4, 0.3, 0.3],
              means=[[-1.2, -0.8, 0.0], [1.2, -0.8, 0.4], [0.0, 1.2, -0.4]],
              covs=[[0.7, 0.5, 0.6], [0.5, 0.8, 0.6], [0.6, 0.6, 0.5]])


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=1))))


def _ott_divergence(a, b, eps):
    try:
        from ott.geometry import pointcloud
        from ott.tools import sinkhorn_divergence as sd
    except ImportError:
        return None
    out = sd.sinkhorn_divergence(pointcloud.PointCloud, jnp.asarray(a), jnp.asarray(b),
                                 epsilon=eps)
    return float(out[0] if isinstance(out, tuple) else out.divergence)


def neural_stacks(cfg, seed):
    rows = []
    for name, spec in (("2-D", MIX_2D), ("3-D", MIX_3D)):
        mix = tr.GaussianMixture(**spec)
        key = jax.random.PRNGKey(seed)
        k0, k1, k2, k3 = jax.random.split(key, 4)
        x0 = mix.sample(k0, cfg["particles"])
        total, layers = cfg["total_time"], cfg["layers"]
        t0 = time.perf_counter()
        neural, trained = tr.neural_dae_stack(x0, k1, total, layers, width=cfg["width"],
                                              steps=cfg["steps"], train_size=cfg["train_size"])
        train_s = time.perf_counter() - t0
        # the first layer's learned score against the exact score of mu * W_tau on its data
        true = jax.vmap(mix.smoothed(total / layers).score)(x0)
        score_err = _rms(jax.vmap(trained[0].score)(x0), true) / _rms(true, 0.0 * true)
        exact = tr.exact_flow(mix, x0, total * np.arange(layers + 1) / layers)
        oracle = tr.oracle_dae_stack(mix, x0, total, layers)
        moved = _rms(x0, exact[-1])
        m = cfg["subsample"]
        floor_cloud = mix.at(total).sample(k3, m)
        sink = lambda a, b, m=m: tr.sinkhorn_w2(a[:m], b[:m], 0.01, 300)
        row = {
            "data": name, "seed": seed, "L": layers, "t": total, "train s": f"{train_s:.0f}",
            "layer-0 score err": f"{score_err:.3f}",
            "RMS move": f"{moved:.3f}",
            "neural RMS err/move": f"{_rms(neural[-1], exact[-1]) / moved:.3f}",
            "oracle RMS err/move": f"{_rms(oracle[-1], exact[-1]) / moved:.3f}",
            "SW2 neural": f"{tr.sliced_w2(neural[-1], exact[-1], k2, 128):.4f}",
            "SW2 oracle": f"{tr.sliced_w2(oracle[-1], exact[-1], k2, 128):.4f}",
            "SW2 start": f"{tr.sliced_w2(x0, exact[-1], k2, 128):.4f}",
            "W2eps neural": f"{sink(neural[-1], exact[-1]):.4f}",
            "W2eps oracle": f"{sink(oracle[-1], exact[-1]):.4f}",
            "W2eps start": f"{sink(x0, exact[-1]):.4f}",
            "W2eps indep. floor": f"{sink(floor_cloud, exact[-1]):.4f}",
        }
        ott = _ott_divergence(neural[-1][:m], exact[-1][:m], 0.01)
        ours = tr.sinkhorn_divergence(neural[-1][:m], exact[-1][:m], 0.01, 300)
        row["S_eps ours / ott"] = "no ott" if ott is None else f"{ours:.5f} / {ott:.5f}"
        rows.append(row)
        if name == "2-D":
            stack_2d = (mix, x0, neural, oracle, exact)
    return rows, stack_2d


def _fmt(m) -> str:
    return np.array2string(np.asarray(m), precision=3, suppress_small=True,
                           separator=",").replace("\n", "")


def exact_fits(cfg, seed, stack_2d):
    grid = mj.Grid.from_bounds((64, 64), (-6.0, -6.0), (6.0, 6.0))
    diff = tr.density_differentiator(grid, 1.5)
    mix, x0_small, neural, oracle, exact = stack_2d
    tau = cfg["total_time"] / cfg["layers"]
    rows = []
    key = jax.random.PRNGKey(seed + 100)
    x0 = mix.sample(key, cfg["fit_particles"])

    def report(case, fits, expected_d, expected_g=None, expected_c=None):
        err_d = max(float(np.max(np.abs(f.diffusion - e))) for f, e in zip(fits, expected_d,
                                                                       strict=True))
        row = {"case": case, "layers fitted": len(fits), "max |D - exact|": f"{err_d:.3f}",
               "D (last layer)": _fmt(fits[-1].diffusion),
               "residual": f"{max(f.relative_residual for f in fits):.3f}"}
        if expected_g is not None:
            err_g = max(float(np.max(np.abs(f.drift_matrix - expected_g))) for f in fits)
            err_c = max(float(np.max(np.abs(f.drift_constant - expected_c))) for f in fits)
            row["max |G - exact|"], row["max |c - exact|"] = f"{err_g:.3f}", f"{err_c:.3f}"
        rows.append(row)

    # (a) affine residual stack
    b_mat, b_vec, h = np.array([[-0.5, 1.0], [-0.8, 0.2]]), np.array([0.3, -0.2]), 0.05
    g, c = tr.affine_generator(b_mat, b_vec, h)
    fits = tr.layer_fits(tr.affine_residual_stack(x0, b_mat, b_vec, cfg["layers"], h), grid,
                         diff, h)
    report("affine ResNet, mixture", fits, [np.zeros((2, 2))] * len(fits), g, c)
    # (b) ideal DAE layers on a Gaussian: D_k from the covariance recursion
    s = np.array([[1.0, 0.3], [0.3, 0.8]])
    gauss = tr.GaussianMixture([1.0], [[0.0, 0.0]], [s])
    xs = tr.oracle_dae_stack(gauss, gauss.sample(key, cfg["fit_particles"]),
                             cfg["total_time"], cfg["layers"])
    fits = tr.layer_fits(xs, grid, diff, tau, drift="none")
    expected, cov = [], s
    for k in range(cfg["layers"]):
        sk = s - 2 * k * tau * np.eye(2)
        mm = sk @ np.linalg.inv(sk + tau * np.eye(2))
        new = mm @ cov @ mm.T
        expected.append((new - cov) / (2 * tau))
        cov = new
    report("oracle DAE, Gaussian (D only)", fits, expected)
    zero = np.zeros((2, 2)), np.zeros(2)
    # (c) exact deep flow of the mixture, (d) ideal layers, (e) trained neural layers
    times = cfg["total_time"] * np.arange(cfg["layers"] + 1) / cfg["layers"]
    fits = tr.layer_fits(tr.exact_flow(mix, x0, times), grid, diff, tau)
    report("exact deep flow, mixture", fits, [-np.eye(2)] * len(fits), *zero)
    fits = tr.layer_fits(tr.oracle_dae_stack(mix, x0, cfg["total_time"], cfg["layers"]),
                         grid, diff, tau)
    report("oracle DAE layers, mixture", fits, [-np.eye(2)] * len(fits), *zero)
    fits = tr.layer_fits(neural, grid, diff, tau)
    report(f"neural DAE layers, mixture ({neural.shape[1]} particles)", fits,
           [-np.eye(2)] * len(fits), *zero)
    return rows


def resnet(cfg, seed):
    key = jax.random.PRNGKey(seed + 200)
    k_data, k_test, k_net, k_cloud = jax.random.split(key, 4)
    x, y = tr.two_moons(k_data, 1000, noise=0.15)
    net = tr.ResidualNet(2, 2, cfg["blocks"], k_net, width=16)
    t0 = time.perf_counter()
    net, history, acc = tr.train_classifier(net, x, y, steps=cfg["resnet_steps"])
    train_s = time.perf_counter() - t0
    xt, yt = tr.two_moons(k_test, 1000, noise=0.15)
    test_acc = float(jnp.mean(jnp.argmax(jax.vmap(net)(xt), axis=1).astype(yt.dtype) == yt))
    cloud, _ = tr.two_moons(k_cloud, cfg["fit_particles"], noise=0.15)
    feats = jnp.swapaxes(jax.vmap(net.features)(cloud), 0, 1)  # (L + 1, n, 2)
    lo = np.quantile(np.asarray(feats).reshape(-1, 2), 0.0005, axis=0)
    hi = np.quantile(np.asarray(feats).reshape(-1, 2), 0.9995, axis=0)
    half = float(np.max(hi - lo)) / 2 + 1.0  # a square box with a margin for the kernel
    centre = (hi + lo) / 2
    grid = mj.Grid.from_bounds((64, 64), tuple(centre - half), tuple(centre + half))
    eps = 8 * float(grid.spacing[0])  # the same 8 cells as the mixture fits
    diff = tr.density_differentiator(grid, eps)
    h = net.step
    fits = tr.layer_fits(feats, grid, diff, h)
    drift_only = tr.layer_fits(feats, grid, diff, h, diffusion=False)
    rows = []
    for k, (f, f0) in enumerate(zip(fits, drift_only, strict=True)):
        v = jax.vmap(lambda p, k=k: net.velocity(k, p))(feats[k])
        design = np.concatenate([np.ones((v.shape[0], 1)), np.asarray(feats[k])], axis=1)
        coef, *_ = np.linalg.lstsq(design, np.asarray(v), rcond=None)
        affine_part = design @ coef
        r2 = 1 - np.sum((np.asarray(v) - affine_part) ** 2) / np.sum(
            (np.asarray(v) - np.asarray(v).mean(0)) ** 2)
        if k % max(1, cfg["blocks"] // 5) == 0 or k == cfg["blocks"] - 1:
            rows.append({
                "layer": k, "c": _fmt(f.drift_constant), "G": _fmt(f.drift_matrix),
                "D": _fmt(f.diffusion), "eig D": _fmt(np.linalg.eigvalsh(f.diffusion)),
                "residual": f"{f.relative_residual:.3f}",
                "residual, D = 0": f"{f0.relative_residual:.3f}",
                "G of LS affine fit of f_l": _fmt(coef[1:].T), "R^2 affine": f"{r2:.3f}",
            })
    summary = {"blocks": cfg["blocks"], "train accuracy": f"{acc:.3f}",
               "test accuracy": f"{test_acc:.3f}", "train s": f"{train_s:.0f}",
               "loss first/last": f"{float(history[0]):.3f}/{float(history[-1]):.4f}",
               "box": _fmt(np.stack([centre - half, centre + half])), "eps": f"{eps:.3f}"}
    return summary, rows


FULL = dict(particles=20000, train_size=20000, layers=10, total_time=0.15, width=32,
            steps=500, subsample=1000, fit_particles=100000, blocks=20, resnet_steps=1500)
QUICK = dict(particles=5000, train_size=5000, layers=5, total_time=0.15, width=32,
             steps=200, subsample=400, fit_particles=30000, blocks=10, resnet_steps=500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stack-seeds", type=int, default=1,
                        help="repeat the neural-stack comparison for seeds seed, seed + 1, ...")
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    info = C.machine_info()
    t0 = time.perf_counter()
    stack_rows, stack_2d = neural_stacks(cfg, args.seed)
    for s in range(args.seed + 1, args.seed + args.stack_seeds):
        stack_rows += neural_stacks(cfg, s)[0]
    if args.stack_seeds > 1:
        for name in ("2-D", "3-D"):
            sel = [r for r in stack_rows if r["data"] == name]
            cell = lambda col, sel=sel: np.array([float(r[col]) for r in sel])
            stack_rows.append({"data": name, "seed": f"mean +- std of {len(sel)}", **{
                col: f"{cell(col).mean():.3f} +- {cell(col).std(ddof=1):.3f}"
                for col in ("layer-0 score err", "neural RMS err/move", "oracle RMS err/move",
                            "W2eps neural", "W2eps oracle", "W2eps indep. floor")}})
    fit_rows = exact_fits(cfg, args.seed, stack_2d)
    summary, layer_rows = resnet(cfg, args.seed)
    text = "\n\n".join([
        f"sizes: {cfg}, seed {args.seed}",
        "## Neural DAE stacks against the exact flow\n\n" + C.format_table(
            stack_rows, list(stack_rows[0])),
        "## Per-layer Fokker-Planck fits with exact answers\n\n" + C.format_table(
            fit_rows, ["case", "layers fitted", "max |D - exact|", "max |G - exact|",
                       "max |c - exact|", "D (last layer)", "residual"]),
        "## Trained residual network, two moons\n\n" + C.format_table([summary],
                                                                      list(summary)),
        C.format_table(layer_rows, list(layer_rows[0])),
    ])
    C.finish_report(args, info, stack_rows + fit_rows + [summary] + layer_rows, text,
                    time.perf_counter() - t0)


if __name__ == "__main__":
    main()
