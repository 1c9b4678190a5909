"""Depth-2 networks as electrodynamics (Panigrahy, Rahimi, Sachdeva, Zhang, arXiv 1702.00458).

Everything the electrodynamics view offers, and `run`, the default demonstration:

1. potentials `Phi(theta, w) = E_x[sigma(theta.x) sigma(w.x)]` of sign, Hermite and ReLU units
   in closed form, checked by Monte Carlo;
2. the screened (almost lambda-harmonic) unit, its Laplacian identity and gradient descent of
   student electrons towards teacher protons, node-wise and joint, against a Gaussian unit;
3. recovery of the teacher from samples by applying the mollified `(lambda - Laplacian)`;
4. electron dynamics of sign, Hermite and ReLU units on the sphere `S^{d-1}`: population
   gradient descent and SGD on samples, vmapped over random starts
   (`benchmarks/electro_sphere.py` measures success and convergence rates).

Run it as `mollijax theory electro configs/theory_electro.toml --out OUT_DIR`. Uses only the
public mollijax API (`import mollijax as mj`).
"""

from __future__ import annotations

import copy
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import mollijax as mj

from ._electro_dynamics import (
    Charges as Charges,
    descend as descend,
    descend_nodewise as descend_nodewise,
    energy as energy,
    felt_potential as felt_potential,
    position_laplacians as position_laplacians,
)
from ._electro_inverse import (
    estimate_potential as estimate_potential,
    match_errors as match_errors,
    random_teacher as random_teacher,
    read_charges as read_charges,
    sample_teacher as sample_teacher,
    source_density as source_density,
)
from ._electro_potentials import (
    AbstractUnit as AbstractUnit,
    GaussianUnit as GaussianUnit,
    ScreenedUnit as ScreenedUnit,
    bessel_k0 as bessel_k0,
    exp1 as exp1,
    hermite_activation as hermite_activation,
    hermite_potential as hermite_potential,
    lattice_features as lattice_features,
    lattice_unit as lattice_unit,
    monte_carlo_potential as monte_carlo_potential,
    relu_activation as relu_activation,
    relu_potential as relu_potential,
    sign_activation as sign_activation,
    sign_potential as sign_potential,
    torus_potential as torus_potential,
)
from ._electro_sphere import (
    AbstractSphereUnit as AbstractSphereUnit,
    HermiteSphere as HermiteSphere,
    ReluSphere as ReluSphere,
    SignSphere as SignSphere,
    SphereNetwork as SphereNetwork,
    angles_of_cosine as angles_of_cosine,
    descend_sphere as descend_sphere,
    fit_rates as fit_rates,
    match_teacher as match_teacher,
    network_output as network_output,
    normalise as normalise,
    orthonormal_directions as orthonormal_directions,
    population_loss as population_loss,
    random_directions as random_directions,
    sample_loss as sample_loss,
    sgd_sphere as sgd_sphere,
    sphere_angles as sphere_angles,
    sphere_gradient as sphere_gradient,
    sphere_sgd as sphere_sgd,
    sphere_unit as sphere_unit,
)


class ElectroConfigError(mj.MollijaxError):
    """A configuration of `run` names an unknown section or key, or a bad value."""


ELECTRO_DEFAULTS: dict[str, dict] = {
    "potentials": {
        "dim": 3,  # input dimension d, x ~ N(0, I_d)
        "samples": 200_000,  # Monte Carlo draws per pair
        "hermite_degrees": [1, 2, 3],
        "angles": 9,  # number of angles in [0, pi] checked
        "seed": 0,
    },
    "dynamics": {
        "lam": 4.0,  # screening of the harmonic-type unit
        "delta": 0.05,  # its core width
        "gaussian_width": 1.0,  # width s of the Gaussian unit (> half the proton separation)
        "proton_charges": [1.0, 1.0],
        "proton_positions": [[-0.5, 0.0], [0.5, 0.0]],
        "electron_charges": [0.0, 0.0],
        "electron_positions": [[0.1, 0.3], [-0.05, -0.25]],
        "lr": 0.02,
        "steps": 3000,  # gradient steps per node-wise stage, and for joint learning
    },
    "recovery": {
        "grid": 128,  # nodes per axis of the periodic unit box
        "lam": 25.0,
        "delta": 0.02,
        "eps": "auto",  # mollifier half-width: "auto" (recovery_widths) or a number
        "samples": 300_000,
        "protons": 4,
        "min_separation": 0.25,
        "charge_range": [0.5, 1.5],
        "signed": True,
        "label_noise": 0.0,
        "radius": 0.11,  # integration disk around each peak
        "threshold": 0.3,  # peaks above this fraction of the largest
        "seeds": 10,
    },
}


def electro_config(config: dict | None = None) -> dict:
    """Defaults merged with `config` (sections and keys as in `ELECTRO_DEFAULTS`).

    Raises `ElectroConfigError` naming any unknown section or key, or a value whose type
    differs from the default's.
    """
    merged = copy.deepcopy(ELECTRO_DEFAULTS)
    for section, values in (config or {}).items():
        if section not in merged:
            raise ElectroConfigError(
                f"Unknown config section {section!r}; expected one of {sorted(merged)}."
            )
        if not isinstance(values, dict):
            raise ElectroConfigError(
                f"Config section {section!r} must be a table, got {type(values).__name__}."
            )
        for key, value in values.items():
            if key not in merged[section]:
                raise ElectroConfigError(
                    f"Unknown config key {section}.{key}; expected one of "
                    f"{sorted(merged[section])}."
                )
            default = merged[section][key]
            if (section, key) == ("recovery", "eps"):
                merged[section][key] = _check_width(value)
                continue
            ok = (isinstance(value, type(default)) or
                  (isinstance(default, float) and isinstance(value, int)
                   and not isinstance(value, bool)))
            if not ok:
                raise ElectroConfigError(
                    f"Config key {section}.{key} must be a {type(default).__name__} like "
                    f"{default!r}, got {value!r}."
                )
            merged[section][key] = value
    return merged


def _check_width(value):
    """`recovery.eps`: "auto" or a positive number, else `ElectroConfigError` naming it."""
    if value == "auto":
        return value
    if (isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value)
            or value <= 0):
        raise ElectroConfigError(
            f'Config key recovery.eps must be "auto" (the width from the sampled potential, '
            f"`recovery_widths`) or a positive number, got {value!r}."
        )
    return float(value)


# The highest derivative order of the recovery operator `lambda - Laplacian`.
RECOVERY_ORDER = 2


def recovery_widths(grid: mj.Grid, potential) -> tuple[float, ...]:
    """Per-axis kernel half-widths for `source_density` from the data alone: `eps = "auto"`
    of `run_recovery`, the library's rule `mj.suggest_widths(grid, RECOVERY_ORDER,
    {"V": potential})` (the Monte Carlo noise of the estimated potential `V_hat`, read by
    `mj.estimate_noise`, against the smoothing bias of a second-order operator)."""
    return mj.suggest_widths(grid, RECOVERY_ORDER, {"V": potential})


# --------------------------------------------------------------------------- parts


def check_potentials(cfg: dict) -> dict:
    """Closed-form potentials against Monte Carlo at `cfg["angles"]` angles.

    **Returns:** angles, closed-form and Monte Carlo values and standard errors per activation,
    and the largest `|MC - exact| / stderr` (a z-score; below ~4 when the formula is right).
    """
    d = cfg["dim"]
    angles = np.linspace(0.0, np.pi, cfg["angles"])
    theta = jnp.zeros(d).at[0].set(1.0)
    ws = jnp.zeros((angles.size, d)).at[:, 0].set(np.cos(angles)).at[:, 1].set(np.sin(angles))
    table = {"sign": (sign_activation, sign_potential), "relu": (relu_activation, relu_potential)}
    for m in cfg["hermite_degrees"]:
        table[f"hermite{m}"] = (lambda z, m=m: hermite_activation(z, m),
                                lambda t, w, m=m: hermite_potential(t, w, m))
    key = jax.random.key(cfg["seed"])
    out = {"angles": angles, "curves": {}, "max_z": {}}
    for name, (act, pot) in table.items():
        exact = np.asarray(pot(jnp.broadcast_to(theta, ws.shape), ws))
        mc = [monte_carlo_potential(act, theta, w, jax.random.fold_in(key, i), cfg["samples"])
              for i, w in enumerate(ws)]
        mean = np.array([float(v) for v, _ in mc])
        err = np.array([float(e) for _, e in mc])
        z = np.abs(mean - exact) / np.maximum(err, 1e-300)
        out["curves"][name] = (exact, mean, err)
        out["max_z"][name] = float(np.max(np.where(err > 0, z, 0.0)))
    return out


def check_laplacian_identity(unit: ScreenedUnit, student: Charges, teacher: Charges) -> dict:
    """Compare `Laplacian_{theta_i} L` (autodiff) with `lam a_i dL/da_i - 2 lam a_i^2 G(0)`.

    The identity is exact where every other charge is outside electron `i`'s core; the exact
    defect is `-2 a_i sum_k q_k rho_delta(theta_i - p_k)` over the other charges `q_k` at `p_k`
    (electrons `+a`, protons `-b`). **Returns** both residuals, relative to `|Laplacian|`.
    """
    lap = position_laplacians(student, unit, teacher)
    dlda = jax.grad(energy)(student, unit, teacher).charge
    a = student.charge
    rhs = unit.lam * a * dlda - 2.0 * unit.lam * a**2 * unit.self_energy()
    n = a.shape[0]
    off = 1.0 - jnp.eye(n)
    core_e = unit.core(student.position[:, None] - student.position[None]) * off
    core_p = unit.core(student.position[:, None] - teacher.position[None])
    defect = -2.0 * a * (core_e @ a - core_p @ teacher.charge)
    scale = jnp.max(jnp.abs(lap))
    return {
        "laplacian": lap,
        "rhs": rhs,
        "relative_residual": float(jnp.max(jnp.abs(lap - rhs)) / scale),
        "relative_residual_with_core": float(jnp.max(jnp.abs(lap - rhs - defect)) / scale),
    }


def run_dynamics(cfg: dict) -> dict:
    """Node-wise and joint gradient descent with the screened and the Gaussian unit."""
    teacher = Charges(jnp.asarray(cfg["proton_charges"], dtype=float),
                      jnp.asarray(cfg["proton_positions"], dtype=float))
    init = Charges(jnp.asarray(cfg["electron_charges"], dtype=float),
                   jnp.asarray(cfg["electron_positions"], dtype=float))
    units = {"screened": ScreenedUnit(cfg["lam"], cfg["delta"]),
             "gaussian": GaussianUnit(cfg["gaussian_width"])}
    out = {"teacher": teacher, "init": init, "units": units, "runs": {}}
    for name, unit in units.items():
        node_final, node_paths = descend_nodewise(init, unit, teacher, cfg["lr"], cfg["steps"])
        joint_final, joint_path = descend(init, unit, teacher, cfg["lr"], cfg["steps"])
        out["runs"][name] = {"nodewise": (node_final, node_paths),
                             "joint": (joint_final, joint_path)}
    return out


def _distances(points, targets):
    p, t = np.asarray(points), np.asarray(targets)
    return np.linalg.norm(p[:, None] - t[None], axis=-1)


def _last_state_outside_cores(path: Charges, teacher: Charges, core: float) -> int:
    """Index of the last state of `path` where every electron is farther than `core` from
    every other electron and every proton (0 if none after the start)."""
    pos = np.asarray(path.position)  # (T, n, 2)
    n = pos.shape[1]
    to_e = np.where(np.eye(n, dtype=bool), np.inf,
                    np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1))
    to_p = np.linalg.norm(pos[:, :, None] - np.asarray(teacher.position)[None, None], axis=-1)
    ok = (to_e.min(axis=(1, 2)) > core) & (to_p.min(axis=(1, 2)) > core)
    ok &= np.abs(np.asarray(path.charge)).min(axis=1) > 0
    good = np.flatnonzero(ok)
    return int(good[-1]) if good.size else 0


def run_recovery(cfg: dict) -> dict:
    """Teacher recovery over `cfg["seeds"]` random teachers: max position and charge errors.

    With `cfg["eps"] == "auto"` each seed's kernel width comes from its own estimated
    potential (`recovery_widths`); a number is used as is. `per_seed` holds
    `(position error, charge error, protons found, width)`.
    """
    n = cfg["grid"]
    grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), periodic=True)
    unit = ScreenedUnit(cfg["lam"], cfg["delta"])
    _check_width(cfg["eps"])
    per_seed = []
    example = None
    for seed in range(cfg["seeds"]):
        kt, ks = jax.random.split(jax.random.key(seed))
        teacher = random_teacher(kt, cfg["protons"], 1.0, cfg["min_separation"],
                                 tuple(cfg["charge_range"]), cfg["signed"])
        m, beta, amp, y = sample_teacher(teacher, unit, grid, ks, cfg["samples"],
                                         cfg["label_noise"])
        v_hat = estimate_potential(m, beta, amp, y, grid)
        eps = (recovery_widths(grid, v_hat)[0] if cfg["eps"] == "auto"  # square grid: one width
               else float(cfg["eps"]))
        D = mj.Mollifier(grid, eps, boundary="periodic")
        density = source_density(v_hat, cfg["lam"], D)
        found = read_charges(density, grid, cfg["radius"], cfg["threshold"])
        pos_err, chg_err = match_errors(found, teacher, 1.0)
        per_seed.append((float(pos_err), float(chg_err), int(found.charge.shape[0]), eps))
        if example is None:
            example = (grid, teacher, v_hat, density, found)
    pos = [p for p, _, _, _ in per_seed]
    chg = [c for _, c, _, _ in per_seed]
    return {"per_seed": per_seed, "max_position_error": max(pos), "max_charge_error": max(chg),
            "example": example}


# --------------------------------------------------------------------------- plots


def _plot_potentials(pot, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (exact, mean, err) in pot["curves"].items():
        line, = ax.plot(pot["angles"], exact, label=name)
        ax.errorbar(pot["angles"], mean, yerr=3 * err, fmt="o", ms=3, color=line.get_color())
    ax.set_xlabel("angle between theta and w")
    ax.set_ylabel("Phi(theta, w)")
    ax.set_title("closed form (lines) vs Monte Carlo (dots, 3 s.e.)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_unit(unit: ScreenedUnit, gauss: GaussianUnit, path):
    import matplotlib.pyplot as plt

    r = jnp.linspace(1e-3, 2.0, 400)
    d = jnp.stack([r, jnp.zeros_like(r)], -1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(r, unit.potential(d), label="screened G (mollified)")
    ax.semilogy(r, unit.far_field(r), "--", label="exp(lam t0) K0(sqrt(lam) r) / 2pi")
    ax.semilogy(r, gauss.potential(d), label=f"Gaussian, s={gauss.width}")
    ax.axvline(6 * unit.delta, color="gray", lw=0.8, label="6 delta (core)")
    ax.set_xlabel("r")
    ax.set_ylim(1e-4, 5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_trajectories(dyn, path):
    import matplotlib.pyplot as plt

    teacher = dyn["teacher"]
    panels = [("screened", "nodewise"), ("screened", "joint"), ("gaussian", "nodewise"),
              ("gaussian", "joint")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    xs = np.linspace(-1.2, 1.2, 121)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    grid_pts = jnp.asarray(np.stack([X, Y], -1))
    for ax, (uname, mode) in zip(axes, panels, strict=True):
        unit = dyn["units"][uname]
        V = felt_potential(grid_pts, Charges(jnp.zeros(0), jnp.zeros((0, 2))), unit, teacher)
        ax.contourf(X, Y, np.asarray(-V), levels=30, cmap="viridis")
        final, paths = dyn["runs"][uname][mode]
        paths = paths if isinstance(paths, list) else [paths]
        for stage, p in enumerate(paths):
            for i in range(p.position.shape[1]):
                if mode == "nodewise" and i != stage:
                    continue
                tr = np.asarray(p.position[:, i])
                ax.plot(tr[:, 0], tr[:, 1], "w-", lw=1.2)
                ax.plot(tr[0, 0], tr[0, 1], "wo", ms=4)
        ax.plot(*np.asarray(final.position).T, "rx", ms=9, mew=2, label="electrons (end)")
        ax.plot(*np.asarray(teacher.position).T, "k+", ms=12, mew=2, label="protons")
        ax.set_title(f"{uname} unit, {mode}")
        ax.set_aspect("equal")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_recovery(rec, path):
    import matplotlib.pyplot as plt

    grid, teacher, v_hat, density, found = rec["example"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    ext = (0, 1, 0, 1)
    for ax, field, title in ((axes[0], v_hat, "Monte Carlo V(theta)"),
                             (axes[1], density, "(lam - Laplacian) V, mollified")):
        im = ax.imshow(np.asarray(field).T, origin="lower", extent=ext, cmap="RdBu_r")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.plot(*np.asarray(teacher.position).T, "k+", ms=12, mew=2, label="teacher")
        ax.plot(*np.asarray(found.position).T, "gx", ms=9, mew=2, label="recovered")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry point


def run(config: dict, out: pathlib.Path) -> dict:
    """Run the demonstration described by `config` and write PNG plots into the folder `out`.

    `config` has the sections `potentials`, `dynamics` and `recovery` of
    `configs/theory_electro.toml`; missing keys take `ELECTRO_DEFAULTS`, unknown ones raise
    `ElectroConfigError`. Computations run in float64 (this enables `jax_enable_x64`).

    **Returns:** a JSON-serialisable dict of metrics: Monte Carlo z-scores of the closed-form
    potentials, the Laplacian-identity residual, the distances of the node-wise electrons
    to the protons and to the midpoint, and the teacher-recovery errors per seed.
    """
    cfg = electro_config(config)
    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    metrics: dict = {}

    pot = check_potentials(cfg["potentials"])
    metrics["potential_max_z"] = pot["max_z"]
    _plot_potentials(pot, out_dir / "electro_potentials.png")

    dyn = run_dynamics(cfg["dynamics"])
    teacher = dyn["teacher"]
    midpoint = np.asarray(teacher.position).mean(axis=0, keepdims=True)
    for name in ("screened", "gaussian"):
        node_final = dyn["runs"][name]["nodewise"][0]
        joint_final = dyn["runs"][name]["joint"][0]
        metrics[f"{name}_nodewise_to_protons"] = _distances(
            node_final.position, teacher.position).min(axis=0).tolist()
        metrics[f"{name}_first_electron_to_midpoint"] = float(
            _distances(node_final.position[:1], midpoint)[0, 0])
        metrics[f"{name}_nodewise_loss"] = float(energy(node_final, dyn["units"][name], teacher))
        metrics[f"{name}_joint_to_protons"] = _distances(
            joint_final.position, teacher.position).min(axis=0).tolist()
        metrics[f"{name}_joint_loss"] = float(energy(joint_final, dyn["units"][name], teacher))
    # the last state of the joint descent with every electron outside all other cores
    path = dyn["runs"]["screened"]["joint"][1]
    unit = dyn["units"]["screened"]
    probe_step = _last_state_outside_cores(path, teacher, 6 * unit.delta)
    probe = jax.tree_util.tree_map(lambda x: x[probe_step], path)
    ident = check_laplacian_identity(unit, probe, teacher)
    metrics["laplacian_identity_probe_step"] = probe_step
    metrics["laplacian_identity_relative_residual"] = ident["relative_residual"]
    metrics["laplacian_identity_relative_residual_with_core"] = ident[
        "relative_residual_with_core"]
    _plot_unit(dyn["units"]["screened"], dyn["units"]["gaussian"], out_dir / "electro_unit.png")
    _plot_trajectories(dyn, out_dir / "electro_trajectories.png")

    rec = run_recovery(cfg["recovery"])
    metrics["recovery_per_seed"] = [
        {"seed": s, "position_error": p, "charge_error": c, "found": k, "eps": e}
        for s, (p, c, k, e) in enumerate(rec["per_seed"])
    ]
    metrics["recovery_eps_rule"] = "auto" if cfg["recovery"]["eps"] == "auto" else "config"
    metrics["recovery_eps"] = [e for _, _, _, e in rec["per_seed"]]
    metrics["recovery_max_position_error"] = rec["max_position_error"]
    metrics["recovery_max_charge_error"] = rec["max_charge_error"]
    _plot_recovery(rec, out_dir / "electro_recovery.png")

    metrics["seconds"] = time.perf_counter() - start
    (out_dir / "electro_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
