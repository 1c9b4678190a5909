"""Infinitely deep denoising autoencoders as transport (Sonoda & Murata, arXiv 1605.02832).

A Gaussian denoising autoencoder (DAE) with noise variance `t` maps
`x -> x + t grad log(W_t * mu)(x)`, `W_t` the heat kernel. Stacking layers of noise `t / L`,
each trained on the previous layer's features, tends as `L -> inf` to the particle flow
`dx/dt = grad log mu_t`; the feature density then obeys the backward heat equation
`d mu/dt = -Laplacian(mu)`, the Wasserstein gradient flow of the entropy
(`dH/dt = -I`, the Fisher information). This module provides

- exact transport of Gaussian mixtures (`GaussianMixture`, `exact_flow`, `oracle_dae_stack`;
  by an Ornstein-Uhlenbeck flow, `GaussianMixture.ornstein_uhlenbeck` and `ou_transition`),
  DAE layers trained with optax (`AffineDenoiser`, `RBFDenoiser`, `trained_dae_stack`) and a
  Brownian control (`brownian_flow`);
- density snapshots (`particle_density`), entropy and Fisher information (`entropy_fisher`),
  Wasserstein distances (`w2_sorted`, `w2_gaussian`, `sliced_w2`);
- the inverse problem: the diffusion tensor `D` in `d rho/dt = div(D grad rho)` fitted to
  snapshots with mollified derivatives (`fit_diffusion`), and with an affine drift as well,
  per layer of a network (`fit_fokker_planck`, `layer_fits`);
- trained neural networks: stacks of MLP denoisers (`MLPDenoiser`, `neural_dae_stack`), a
  deep residual classifier (`ResidualNet`, `train_classifier`, `two_moons`) and affine
  residual stacks with their exact generator (`affine_residual_stack`, `affine_generator`);
- entropic optimal transport in any dimension (`sinkhorn`, `sinkhorn_w2`);
- `run(config, out)`, the demonstration behind `configs/theory_transport.toml`
  (`mollijax theory transport configs/theory_transport.toml --out OUT_DIR`).

Uses only the public mollijax API (`import mollijax as mj`). See `docs/theory_transport.md`
for the claims and what the tests verify.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np

import mollijax as mj

from ._transport_dae import (
    AffineDenoiser as AffineDenoiser,
    RBFDenoiser as RBFDenoiser,
    grid_centres as grid_centres,
    train_denoiser as train_denoiser,
    trained_dae_stack as trained_dae_stack,
)
from ._transport_density import (
    DiffusionFit as DiffusionFit,
    fit_diffusion as fit_diffusion,
    particle_density as particle_density,
    sliced_w2 as sliced_w2,
    snapshot_densities as snapshot_densities,
    w2_gaussian as w2_gaussian,
    w2_sorted as w2_sorted,
)
from ._transport_fokker import (
    FokkerPlanckFit as FokkerPlanckFit,
    fit_fokker_planck as fit_fokker_planck,
    layer_fits as layer_fits,
)
from ._transport_mixture import (
    GaussianMixture as GaussianMixture,
    MixtureError as MixtureError,
    brownian_flow as brownian_flow,
    deep_dae_variance as deep_dae_variance,
    entropy_fisher as entropy_fisher,
    exact_flow as exact_flow,
    exact_velocity as exact_velocity,
    noise_matrix as noise_matrix,
    oracle_dae_layer as oracle_dae_layer,
    oracle_dae_stack as oracle_dae_stack,
    ou_transition as ou_transition,
    shallow_dae_variance as shallow_dae_variance,
)
from ._transport_neural import (
    MLPDenoiser as MLPDenoiser,
    ResidualNet as ResidualNet,
    affine_generator as affine_generator,
    affine_residual_stack as affine_residual_stack,
    neural_dae_stack as neural_dae_stack,
    train_classifier as train_classifier,
    train_mlp_denoiser as train_mlp_denoiser,
    two_moons as two_moons,
)
from ._transport_ot import (
    SinkhornResult as SinkhornResult,
    sinkhorn as sinkhorn,
    sinkhorn_divergence as sinkhorn_divergence,
    sinkhorn_w2 as sinkhorn_w2,
)


class TransportConfigError(mj.MollijaxError):
    """A key or value of the transport demonstration's configuration is wrong."""


# The default demonstration; `configs/theory_transport.toml` holds the same keys.
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "particles": 40000,
    "weights": [0.5, 0.5],
    "means": [[-1.2, 0.0], [1.2, 0.3]],
    "covariances": [[1.0, 0.8], [0.7, 1.0]],
    "total_time": 0.25,
    "snapshots": 6,
    "layers": 20,
    "noise": [1.0, 1.0],
    "denoiser": "rbf",
    "rbf_per_axis": 6,
    "train_size": 4000,
    "train_steps": 100,
    "learning_rate": 0.05,
    "grid_points": 64,
    "domain": [-6.0, 6.0],
    "eps": "auto",
    "kernel": "bump",
}

# The densities' highest derivative order (`D : Hess rho`), the `order` of the width rule.
DENSITY_ORDER = 2

def make_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """`DEFAULT_CONFIG` updated with `config`; an unknown key raises `TransportConfigError`."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise TransportConfigError(
            f"Unknown transport config key {unknown[0]!r}; expected keys among "
            f"{sorted(DEFAULT_CONFIG)}."
        )
    merged = {**DEFAULT_CONFIG, **config}
    if merged["denoiser"] not in ("affine", "rbf"):
        raise TransportConfigError(
            f"Config key 'denoiser' must be 'affine' or 'rbf', got {merged['denoiser']!r}."
        )
    if merged["kernel"] not in mj.names("kernel"):
        raise TransportConfigError(
            f"Config key 'kernel' must be one of {mj.names('kernel')}, got {merged['kernel']!r}."
        )
    for key in ("particles", "snapshots", "layers", "train_steps", "grid_points",
                "rbf_per_axis", "train_size"):
        if not isinstance(merged[key], int) or merged[key] < 2:
            raise TransportConfigError(
                f"Config key {key!r} must be an integer >= 2, got {merged[key]!r}."
            )
    eps = merged["eps"]
    if eps != "auto" and (isinstance(eps, bool) or not isinstance(eps, int | float)
                          or not np.isfinite(eps) or eps <= 0):
        raise TransportConfigError(
            f"Config key 'eps' must be \"auto\" (the width from the snapshots, "
            f"`auto_density_widths`) or a positive number, got {eps!r}."
        )
    return merged


def auto_density_widths(grid: mj.Grid, densities) -> tuple[float, ...]:
    """Per-axis kernel half-widths for the density snapshots `densities` (shape
    `(T,) + grid.shape`) from the data alone: `eps = "auto"` of the demonstration.

    The library's rule, `mj.suggest_widths(grid, DENSITY_ORDER, data, domain=support)`, with
    every snapshot as a field of `data` and `support` the nodes where every snapshot is
    positive. Outside the particles' support a cloud-in-cell density is exactly zero, so over
    the whole box `mj.estimate_noise` reads the median of mostly empty nodes, returns 0 and
    the rule falls to its floor of 4 steps; inside the support it sees the particle noise,
    and the lengths are those of the support's bounding box.
    """
    rho = np.asarray(densities)
    support = np.all(rho > 0, axis=0)
    if not support.any():
        raise TransportConfigError(
            "The density snapshots share no node where all are positive; cannot choose "
            "`eps` automatically: give config key 'eps' a number."
        )
    data = {f"snapshot {k}": r for k, r in enumerate(rho)}
    return mj.suggest_widths(grid, DENSITY_ORDER, data, domain=support)


def density_differentiator(
    grid: mj.Grid, eps: float | tuple[float, ...], kernel: str = "bump"
) -> mj.Mollifier:
    """The `mj.Mollifier` used for density snapshots: zero boundary (densities vanish outside
    the box) and `scheme="difference"`, so that every derivative is a derivative of the *same*
    smoothed field and `d rho/dt = div(D grad rho)` survives the smoothing unbiased (see
    `docs/theory_transport.md`). `eps`: one half-width or one per axis
    (`auto_density_widths` chooses them from the data); `kernel` a name of
    `mj.names("kernel")`."""
    return mj.Mollifier(grid, eps, kernel=mj.from_name("kernel", kernel), boundary="zero",
                        scheme="difference")


def _plot(out_dir: pathlib.Path, name: str, draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    path = out_dir / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def run(config: dict[str, Any], out: pathlib.Path) -> dict[str, Any]:
    """Run the transport demonstration described by `config` (keys of `DEFAULT_CONFIG`).

    Samples a 2-D Gaussian mixture and transports it (i) by the exact deep-DAE flow
    `dx/dt = A grad log mu_t`, (ii) by `layers` DAE layers trained with optax, and (iii) by a
    Brownian control; then fits the diffusion tensor `D` of each from mollified density
    snapshots, and tracks entropy, Fisher information and Wasserstein distances along depth.
    With `eps = "auto"` (the default) each fit's kernel widths come from its own snapshots
    (`auto_density_widths`); a number is used on both axes. Writes PNG plots into the folder
    `out` and returns a JSON-ready metrics dict (expected `D`: `-A` for the DAE flows, `+I/2`
    for the control; `eps_<fit>` the widths used, per axis).
    """
    cfg = make_config(config)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    mix = GaussianMixture(cfg["weights"], cfg["means"], cfg["covariances"])
    if mix.dim != 2:
        raise TransportConfigError(f"The demonstration is 2-D; config 'means' give d={mix.dim}.")
    a = noise_matrix(cfg["noise"], 2, "noise")
    t_total = float(cfg["total_time"])
    if not 0 < t_total < mix.max_time(a):
        raise TransportConfigError(
            f"Config key 'total_time' must be in (0, {mix.max_time(a):.4g}) (before the "
            f"backward heat flow blows up), got {t_total}."
        )
    key = jax.random.PRNGKey(int(cfg["seed"]))
    k_sample, k_train, k_brown, k_slice = jax.random.split(key, 4)
    x0 = mix.sample(k_sample, cfg["particles"])
    lo, hi = cfg["domain"]
    grid = mj.Grid.from_bounds((cfg["grid_points"],) * 2, (lo, lo), (hi, hi), axes=("x", "y"))

    times = np.linspace(0.0, t_total, cfg["snapshots"])
    exact = exact_flow(mix, x0, times, a)
    brown = brownian_flow(k_brown, x0, times)
    if cfg["denoiser"] == "affine":
        model = AffineDenoiser(2)
    else:
        centres, length = grid_centres(x0, cfg["rbf_per_axis"])
        model = RBFDenoiser(centres, length)
    dae, _ = trained_dae_stack(model, x0, k_train, t_total, cfg["layers"], a,
                               cfg["train_steps"], cfg["learning_rate"],
                               train_size=cfg["train_size"], warm_start=True)
    depth_times = t_total * np.arange(cfg["layers"] + 1) / cfg["layers"]

    snapshots = {
        "exact_flow": (snapshot_densities(exact, grid), times),
        "dae_layers": (snapshot_densities(dae, grid), depth_times),
        "brownian": (snapshot_densities(brown, grid), times),
    }
    # one width per fit, from that fit's own snapshots ("auto"), or the configured number
    widths = {
        name: (auto_density_widths(grid, rho) if cfg["eps"] == "auto"
               else (float(cfg["eps"]),) * 2)
        for name, (rho, _) in snapshots.items()
    }
    diffs = {name: density_differentiator(grid, w, cfg["kernel"]) for name, w in widths.items()}
    fits = {name: fit_diffusion(rho, t, diffs[name]) for name, (rho, t) in snapshots.items()}
    rho_exact = snapshots["exact_flow"][0]
    expected = {"exact_flow": -a, "dae_layers": -a, "brownian": 0.5 * np.eye(2)}

    # entropy and Fisher information along depth (quadrature of the exact mixture)
    quad = mj.Grid.from_bounds((120, 120), (lo, lo), (hi, hi))
    hf = np.array([entropy_fisher(mix.at(t, a), quad, a) for t in depth_times])
    # dH/dt by a central difference of the exact entropy (step 1e-4) at every depth
    dt_h = 1e-4
    entropy_at = lambda t: entropy_fisher(mix.at(t, a), quad, a)[0]
    dh_dt = np.array([
        (entropy_at(t + dt_h) - entropy_at(max(t - dt_h, 0.0))) / (t + dt_h - max(t - dt_h, 0.0))
        for t in depth_times
    ])
    w2_layers = np.array([w2_gaussian(dae[k], dae[k + 1]) for k in range(cfg["layers"])])
    sw2_layers = np.array([sliced_w2(dae[k], dae[k + 1], k_slice) for k in range(cfg["layers"])])
    tau = t_total / cfg["layers"]

    plots = [
        _plot(out_dir, "transport_particles.png",
              lambda plt: _draw_particles(plt, exact, dae, times, depth_times)),
        _plot(out_dir, "transport_densities.png",
              lambda plt: _draw_densities(plt, grid, diffs["exact_flow"], rho_exact, times)),
        _plot(out_dir, "transport_entropy.png",
              lambda plt: _draw_entropy(plt, depth_times, hf, dh_dt, w2_layers, sw2_layers, tau)),
        _plot(out_dir, "transport_fit.png", lambda plt: _draw_fits(plt, fits, expected)),
    ]
    metrics: dict[str, Any] = {"plots": plots, "noise_matrix": a.tolist(),
                               "eps_rule": "auto" if cfg["eps"] == "auto" else "config"}
    for name, fit in fits.items():
        metrics[f"eps_{name}"] = [float(w) for w in widths[name]]
        metrics[f"D_{name}"] = np.round(fit.matrix, 6).tolist()
        metrics[f"D_{name}_expected"] = expected[name].tolist()
        metrics[f"D_{name}_max_error"] = float(np.max(np.abs(fit.matrix - expected[name])))
        metrics[f"D_{name}_relative_residual"] = fit.relative_residual
    metrics["entropy"] = hf[:, 0].tolist()
    metrics["fisher"] = hf[:, 1].tolist()
    metrics["dH_dt_plus_I_max_relative"] = float(np.max(np.abs(dh_dt + hf[:, 1]) / hf[:, 1]))
    metrics["w2_gaussian_per_layer"] = w2_layers.tolist()
    metrics["sliced_w2_per_layer"] = sw2_layers.tolist()
    return metrics


# ----------------------------------------------------------------- plots


def _draw_particles(plt, exact, dae, times, depth_times):
    picks = [0, len(times) // 2, len(times) - 1]
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.5), sharex=True, sharey=True)
    for col, k in enumerate(picks):
        j = int(np.argmin(np.abs(depth_times - times[k])))
        for row, (xs, label, idx, tt) in enumerate(
            ((exact, "exact flow", k, times[k]), (dae, "trained DAE layers", j, depth_times[j]))
        ):
            p = np.asarray(xs[idx][:4000])
            axes[row, col].scatter(p[:, 0], p[:, 1], s=1, alpha=0.4)
            axes[row, col].set_title(f"{label}, t = {tt:.3f}")
            axes[row, col].set_aspect("equal")
    fig.suptitle("features along depth: dx/dt = A grad log mu_t")
    return fig


def _draw_densities(plt, grid, diff, rho, times):
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True)
    x, y = grid.mesh()
    for ax, k in zip(axes, [0, len(times) // 2, len(times) - 1], strict=True):
        smooth = np.asarray(diff(rho[k], ""))
        ax.contourf(x, y, smooth, levels=20)
        ax.set_title(f"mollified density, t = {times[k]:.3f}")
        ax.set_aspect("equal")
    return fig


def _draw_entropy(plt, t, hf, dh_dt, w2, sw2, tau):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(t, hf[:, 0], "o-", label="entropy H")
    axes[0].plot(t, -dh_dt, "s--", label="-dH/dt (central difference)")
    axes[0].plot(t, hf[:, 1], "k:", label="Fisher information I")
    axes[0].set_xlabel("t (depth x noise)")
    axes[0].legend()
    tm = 0.5 * (t[1:] + t[:-1])
    axes[1].plot(tm, w2 / tau, "o-", label="W2(Gaussian fits) / tau")
    axes[1].plot(tm, sw2 * np.sqrt(2.0) / tau, "s-", label="sqrt(2) sliced W2 / tau")
    axes[1].plot(t, np.sqrt(hf[:, 1]), "k:", label="sqrt(I): metric speed")
    axes[1].set_xlabel("t")
    axes[1].legend()
    return fig


def _draw_fits(plt, fits, expected):
    fig, axes = plt.subplots(1, len(fits), figsize=(4 * len(fits), 3.8))
    for ax, (name, fit) in zip(axes, fits.items(), strict=True):
        lhs, pred = fit.rho_t.ravel(), fit.prediction.ravel()
        ax.plot(lhs[::7], pred[::7], ".", ms=1, alpha=0.5)
        lim = float(np.max(np.abs(lhs)))
        ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
        ax.set_title(f"{name}\nD = {np.round(fit.matrix, 3).tolist()}\n"
                     f"expected {np.round(expected[name], 3).tolist()}", fontsize=8)
        ax.set_xlabel("d rho / dt")
        ax.set_ylabel("D : Hess rho")
    return fig
