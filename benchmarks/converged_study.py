"""Converged accuracy study (issue 16): mollified vs competent autodiff derivatives of the same
networks, each run trained until its loss stops improving.

Usage (from the repository root, with the package installed):

    python benchmarks/converged_study.py [--quick] [--core 1] [--json out.json]
        [--markdown out.md] [--figure docs/converged_curves.png] [--only forcing:mlp ...]
        [--cost-only] [--taylor]

Problems (shipped problem files): `forcing` (1st order, time-varying forcing of
`u_t = u + lambda(t)`), `darcy2d` (2nd order, the steady heat equation
`-div(k grad u) = f` with a spatially varying conductivity `k`, `u = 0` on the walls) and
`chromatin` (4th order, the steady chromatin phase field, periodic). Architectures of every
state network: `mlp` (`mj.MLP`), `pirate` (`mj.PirateNet` with `mj.pirate_init` on the noisy
data, as published) and `pinnsformer` (`mj.PINNsFormer`, evaluated as a scalar field: its
first token; the sequential loss of the paper is not used). The unknown coefficient is a
small `mj.MLP` field in every run.

Methods:

- `mollifier`: a `mj.Problem` with `mj.Mollifier(grid, eps, Bump(), boundary)` on the
  networks' grid values, `eps` the library's automatic rule (`mj.suggest_widths`) of the
  noisy data of seed 0 at that noise level, the boundary mode of the shipped configuration;
  the residual is averaged over the mollifier's interior (its halo dropped; none when
  periodic);
- `autodiff`: the competent baseline, written here per problem (as
  `benchmarks/fourth_order_step.py` does): the residual at the SAME interior nodes only, its
  derivatives by nested forward mode (`jax.jvp`, e.g. four deep for the 4th order) of the
  point functions that `NetworkField` evaluates; the interior points and the known fields there
  are arguments of the compiled step. The data and boundary-condition terms are the library's
  (`mj.Problem` without residuals), so the two losses differ only in how the residual's
  derivatives are computed (checked once per problem: its initial loss equals the library's
  `derivatives="autodiff"` loss on the same interior). `--taylor`: chromatin's residual by
  Taylor mode instead (`jax.experimental.jet`: four directional 4th-order jets for the
  biharmonic, `taylor_residual`), the same residual, to compare the two baselines' cost.

Training (fixed before any run, identical for both methods): Adam with the learning rate
`exponential_decay(1e-3, 1000 steps, 0.9)` (a schedule that does not depend on the run's
length), float64, loss = data misfit + mean squared residual + boundary conditions (weights 1).
The steps run in compiled chunks of `W` steps (`lax.scan`); after every chunk the plateau
rule is checked: stop when the best loss of the last chunk is not lower than the best loss
before it by a relative `TOL` = 1e-3, or at the step cap (then the run is "capped": not
converged). One compiled chunk serves every seed and every noise level that has the same
`eps`; the seed draws the noise (`simulate(seed=...)`) and the networks' initial weights.

Recorded per run: steps, plateau or cap, the loss after every chunk (the learning curve),
the final loss, the coefficient's relative L2 error and correlation with the truth
(`mj.score`, its default interior), and the training wall time. Per (problem,
architecture, method): compile time and XLA memory analysis (argument + output + temp) of
one training step, and its median run time.

Figure-1 check (run first; `--no-figure1` skips it): each architecture is fitted (data term only,
same optimiser and plateau rule) to noisy samples of `g(x) = sin(2 pi x) + 0.3 sin(4 pi x)`
on 101 nodes of [0, 1]; the 4th derivative of the fitted network by nested forward-mode
autodiff and by the mollifier (eps by the same rule, from the noisy samples) applied to the
network's grid values, and, for reference, the mollifier applied to the noisy samples
directly, are compared with the analytic `g''''` on the mollifier's interior: correlation
and relative L2 error.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _one_core  # noqa: E402

if __name__ == "__main__":
    _one_core.pin(sys.argv)

import argparse  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import _common as C  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import mollijax as mj  # noqa: E402
from mollijax.config import shipped_config  # noqa: E402

NOISES = (0.0, 0.01, 0.05, 0.10)
ARCHS = ("mlp", "pirate", "pinnsformer")
METHODS = ("mollifier", "autodiff")
TOL = 1e-3  # plateau: relative improvement of the best loss per chunk
LR, DECAY_STEPS, DECAY = 1e-3, 1000, 0.9

# grids and step budgets (fixed before any run; sized from measured step costs only, so that
# the full run fits about 70 minutes on one shared core): `window` steps per plateau check,
# `cap` per architecture (the same for both methods); an architecture without a cap gets the
# cost of one step only (its 2nd- or 4th-order autodiff step costs 0.26-3.9 s here)
FULL = {
    "forcing": {"params": {"nt": 101},
                "window": {"mlp": 1000, "pirate": 1000, "pinnsformer": 250},
                "cap": {"mlp": 12000, "pirate": 12000, "pinnsformer": 1000}},
    "darcy2d": {"params": {"n": 25}, "window": {"mlp": 500, "pirate": 500},
                "cap": {"mlp": 6000, "pirate": 5000}},
    "chromatin": {"params": {"n": 28}, "window": {"mlp": 100, "pirate": 100},
                  "cap": {"mlp": 500, "pirate": 200}},
}
QUICK = {
    "forcing": {"params": {"nt": 41}, "window": {"mlp": 20}, "cap": {"mlp": 60}},
    "darcy2d": {"params": {"n": 13}, "window": {"mlp": 20}, "cap": {"mlp": 60}},
    "chromatin": {"params": {"n": 16}, "window": {"mlp": 10, "pirate": 10},
                  "cap": {"mlp": 20}},
}
FIG1 = {"window": {"mlp": 1000, "pirate": 1000, "pinnsformer": 250},
        "cap": {"mlp": 12000, "pirate": 12000, "pinnsformer": 1000}}


def optimiser():
    return optax.adam(optax.exponential_decay(LR, DECAY_STEPS, DECAY))


# ------------------------------------------------------------------ networks
def make_net(arch: str, in_size: int, key, quick: bool):
    if arch == "mlp":
        return mj.MLP(in_size, width=32, depth=3, key=key)
    if arch == "pirate":
        return mj.PirateNet(in_size, features=16, width=32, blocks=1, key=key)
    if arch == "pinnsformer":
        return mj.PINNsFormer(in_size, d_model=16, heads=2, width=32, seq_len=3, key=key)
    raise ValueError(arch)


def build_fields(module, sim, arch: str, seed: int, quick: bool) -> dict:
    """Unknown coefficient (small MLP) and state networks of `arch`, initial weights from
    `seed`; a PirateNet's output layer is fitted to the noisy data (`pirate_init`)."""
    key = jax.random.PRNGKey(1000 + seed)
    fields = {}
    for k, (name, hint) in enumerate(module.UNKNOWNS.items()):
        axes = tuple(hint["axes"])
        init = float(hint.get("init", 0.0))
        net = mj.MLP(len(axes), width=16, depth=2, key=jax.random.fold_in(key, k))
        fields[name] = mj.NetworkField(net, axes, hint.get("constraint", "free"), init=init,
                                       scale=abs(init) if init else 1.0)
    grid = sim.grid
    pts = grid.points()
    for k, name in enumerate(module.STATE):
        net = make_net(arch, grid.ndim, jax.random.fold_in(key, 100 + k), quick)
        field = mj.NetworkField(net, grid.axes)
        if arch == "pirate":
            xi = jax.vmap(lambda x, f=field: f._scaled(grid, x))(jnp.asarray(pts))
            net = mj.pirate_init(net, xi, jnp.asarray(sim.data[name]).ravel())
            field = mj.NetworkField(net, grid.axes)
        fields[name] = field
    return fields


# ------------------------------------------------------------------ competent autodiff
def _d(fn, v):
    """The directional derivative of a point function along `v` (forward mode)."""
    return lambda y: jax.jvp(fn, (y,), (v,))[1]


def point_residual(pname: str, grid, module):
    """`(fields, known at the point, x) -> residual` by nested forward mode, per problem.

    Written from the problem files' residuals: `forcing` `u_t - u - lam`; `darcy2d`
    `div(k grad u) + f = k (u_xx + u_yy) + k_x u_x + k_y u_y + f`; `chromatin`
    `Lap(mu) + 2 (lam phi_e - phi_h)`, `mu = local(phi_w, phi_d) - kappa^2 Lap(phi_d)`.
    """
    def pf(field):
        return lambda y: field.at_point(grid, None, y)

    if pname == "forcing":
        def r(F, K, x):
            e = jnp.ones((1,), x.dtype)
            u, ut = jax.jvp(pf(F["u"]), (x,), (e,))
            return ut - u - pf(F["lam"])(x)
    elif pname == "darcy2d":
        def r(F, K, x):
            ex, ey = jnp.eye(2, dtype=x.dtype)
            u, k = pf(F["u"]), pf(F["k"])
            ux, uy = _d(u, ex), _d(u, ey)
            kv, kx = jax.jvp(k, (x,), (ex,))
            ky = _d(k, ey)(x)
            return (kv * (_d(ux, ex)(x) + _d(uy, ey)(x)) + kx * ux(x) + ky * uy(x)
                    + K["f"])
    elif pname == "chromatin":
        KAPPA, fractions, local_potential = (module.KAPPA, module.fractions,
                                             module.local_potential)

        def r(F, K, x):
            ex, ey = jnp.eye(2, dtype=x.dtype)
            pw, pd = pf(F["phi_w"]), pf(F["phi_d"])

            def lap(g):
                return lambda y: _d(_d(g, ex), ex)(y) + _d(_d(g, ey), ey)(y)

            def mu(y):
                return local_potential(pw(y), pd(y)) - KAPPA**2 * lap(pd)(y)

            phi_h, phi_e = fractions(pw(x), pd(x))
            return lap(mu)(x) + 2 * (pf(F["lam"])(x) * phi_e - phi_h)
    else:
        raise ValueError(pname)
    return r


def taylor_residual(pname: str, grid, module):
    """`point_residual` of `chromatin` by Taylor mode (`--taylor`): the biharmonic of
    `phi_d` from four directional 4th-order jets (`jax.experimental.jet`, polarisation
    `Lap^2 = 2/3 (D_x^4 + D_y^4) + 1/6 (D_{x+y}^4 + D_{x-y}^4)`, as
    `benchmarks/fourth_order_step.py`), the Laplacian of the local potential from two 2nd-order
    jets of `local(phi_w, phi_d)`; the same residual as the nested forward mode."""
    from jax.experimental import jet

    if pname != "chromatin":
        raise ValueError(f"--taylor is written for chromatin only, not {pname!r}")
    KAPPA, fractions, local_potential = (module.KAPPA, module.fractions,
                                         module.local_potential)

    def pf(field):
        return lambda y: field.at_point(grid, None, y)

    def r(F, K, x):
        ex, ey = jnp.eye(2, dtype=x.dtype)
        pw, pd = pf(F["phi_w"]), pf(F["phi_d"])
        z = jnp.zeros_like(x)

        def d4(v):
            return jet.jet(pd, (x,), ((v, z, z, z),))[1][3]

        bilap = (2.0 / 3.0) * (d4(ex) + d4(ey)) + (d4(ex + ey) + d4(ex - ey)) / 6.0

        def local(y):
            return local_potential(pw(y), pd(y))

        lap_local = sum(jet.jet(local, (x,), ((v, z),))[1][1] for v in (ex, ey))
        phi_h, phi_e = fractions(pw(x), pd(x))
        return lap_local - KAPPA**2 * bilap + 2 * (pf(F["lam"])(x) * phi_e - phi_h)

    return r


def interior_points(grid, margin):
    crop = tuple(slice(m, n - m) for m, n in zip(margin, grid.shape, strict=True))
    pts = np.asarray(grid.points()).reshape(*grid.shape, grid.ndim)[crop]
    return pts.reshape(-1, grid.ndim), crop


# ------------------------------------------------------------------ set-ups
class Setup:
    """One (problem, noise level): the mollifier, its interior, the data of each seed;
    `plug_in`: its widths and kernel by `mj.spectral_widths` (else the rule and `Bump`)."""

    def __init__(self, pname, module, params, noise, seeds, quick, plug_in=False):
        self.pname, self.module, self.noise = pname, module, noise
        self.sims = {s: module.simulate(noise=noise, seed=s, **params) for s in seeds}
        # the widths come from seed 0's data, whichever seeds run (`--seed-list`)
        sim0 = self.sims[0] if 0 in self.sims else module.simulate(noise=noise, seed=0,
                                                                   **params)
        self.grid = sim0.grid
        kernel = mj.Bump()
        if plug_in:  # `--plug-in`: widths and kernel from the data's spectrum
            choice = mj.spectral_widths(self.grid, module.ORDER, dict(sim0.data))
            self.eps, kernel = choice.eps, choice.kernel
        else:
            self.eps = tuple(float(e) for e in mj.suggest_widths(self.grid, module.ORDER,
                                                                 sim0.data))
        boundary = shipped_config(pname).derivatives.boundary
        boundary = boundary if isinstance(boundary, str) else tuple(boundary)
        self.moll = mj.Mollifier(self.grid, self.eps, kernel=kernel, boundary=boundary)
        self.periodic = all(b == "periodic" for b in self.moll.boundary)
        self.margin = (0,) * self.grid.ndim if self.periodic else tuple(self.moll.halo)
        self.points, self.crop = interior_points(self.grid, self.margin)

    def problem(self, seed, method):
        sim = self.sims[seed]
        if method == "mollifier":
            return C.network_problem(self.module, sim, self.moll)
        return mj.Problem(sim, {}, conditions=self.conditions(seed))

    def known_at_points(self, seed):
        return {k: jnp.asarray(np.asarray(v)[self.crop].ravel())
                for k, v in self.sims[seed].known.items()}

    def conditions(self, seed):
        names = set(self.module.UNKNOWNS) | set(self.module.STATE)
        conds = (self.module.conditions(self.sims[seed])
                 if hasattr(self.module, "conditions") else [])
        return [c for c in conds if c.field in names]


def make_loss(method, static_u, pstat, residual=None):
    """`loss(params, args)`: mollifier `args = problem arrays`; autodiff
    `args = (problem arrays without residuals, interior points, known there)`."""
    if method == "mollifier":
        def loss(p, args):
            prob = eqx.combine(args, pstat)
            return prob.total(prob.loss_terms(eqx.combine(p, static_u)))
    else:
        def loss(p, args):
            parr, pts, known = args
            prob = eqx.combine(parr, pstat)
            fields = eqx.combine(p, static_u)
            base = prob.total(prob.loss_terms(fields)) if prob.terms else 0.0
            r = jax.vmap(lambda x, kn: residual(fields, kn, x))(pts, known)
            return base + jnp.mean(r**2)
    return loss


def make_step(loss, opt):
    def step(params, opt_state, args):
        value, grads = jax.value_and_grad(loss)(params, args)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value
    return step


def make_chunk(step, window):
    def chunk(params, opt_state, args):
        def body(carry, _):
            p, s, v = step(*carry, args)
            return (p, s), v
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), None,
                                                   length=window)
        return params, opt_state, losses
    return chunk


def train(compiled_chunk, params, opt_state, args, window, cap):
    """Chunks until the plateau rule or the cap; `(params, record)`."""
    curve, best_before, steps, status = [], np.inf, 0, "capped"
    t0 = time.perf_counter()
    while steps < cap:
        new_params, new_state, losses = compiled_chunk(params, opt_state, args)
        losses = np.asarray(losses)
        steps += window
        if not np.all(np.isfinite(losses)):
            status = "diverged"
            break
        params, opt_state = new_params, new_state
        curve.append(float(losses[-1]))
        best_recent = float(losses.min())
        if np.isfinite(best_before) and best_recent > best_before - TOL * abs(best_before):
            status = "plateau"
            break
        best_before = min(best_before, best_recent)
    C.block(params)
    return params, {"steps": steps, "status": status, "curve": curve, "window": window,
                    "final_loss": curve[-1] if curve else float("nan"),
                    "train_s": time.perf_counter() - t0}


LBFGS_WINDOW = 100
"""L-BFGS iterations per plateau check of the `--lbfgs` phase."""


def make_lbfgs_chunk(loss):
    """`chunk(params, state, args)`: `LBFGS_WINDOW` iterations of `optax.lbfgs` (zoom line
    search) on `loss(params, args)`, scanned; `(params, state, losses)`."""
    opt = optax.lbfgs()

    def chunk(params, state, args):
        fn = lambda p: loss(p, args)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(fn)

        def body(carry, _):
            p, st = carry
            value, grad = value_and_grad(p, state=st)
            updates, st = opt.update(grad, st, p, value=value, grad=grad, value_fn=fn)
            return (optax.apply_updates(p, updates), st), value

        (params, state), losses = jax.lax.scan(body, (params, state), None,
                                               length=LBFGS_WINDOW)
        return params, state, losses

    return opt, chunk


def train_lbfgs(compiled, opt, params, args, cap):
    """The `--lbfgs` phase: chunks until the plateau rule (as `train`) or `cap` iterations."""
    return train(compiled, params, opt.init(params), args, LBFGS_WINDOW, cap)


def time_step(compiled, args, budget=1.0, reps=7):
    C.block(compiled(*args))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        C.block(compiled(*args))
        samples.append(time.perf_counter() - t0)
        if sum(samples) > budget and len(samples) >= 3:
            break
    return float(np.median(samples))


def run_config(pname, module, setups, arch, method, seeds, cfg, quick, log, lbfgs=0,
               on_row=None, taylor=False, cost_only=False):
    """Every noise level and seed of one (problem, architecture, method); with `lbfgs` > 0
    each Adam run is followed by L-BFGS to the plateau rule or `lbfgs` iterations.
    `on_row(row)` is called after every run (e.g. to save a partial JSON)."""
    opt = optimiser()
    rows, cost = [], None
    residual = None
    compiled_cache = {}
    window, cap = cfg["window"].get(arch), cfg["cap"].get(arch)
    train_it = cap is not None and not cost_only
    for noise, st in setups.items():
        if not train_it and noise != 0.05:
            continue
        if method == "autodiff":
            residual = residual or (taylor_residual if taylor else point_residual)(
                pname, st.grid, module)
        key = st.margin if method == "autodiff" else st.eps
        for seed in seeds if train_it else seeds[:1]:
            fields = build_fields(module, st.sims[seed], arch, seed, quick)
            params, static_u = eqx.partition(fields, eqx.is_inexact_array)
            opt_state = opt.init(params)
            problem = st.problem(seed, method)
            parr, pstat = eqx.partition(problem, eqx.is_array)
            args = parr if method == "mollifier" else (
                parr, jnp.asarray(st.points), st.known_at_points(seed))
            if key not in compiled_cache:
                loss = make_loss(method, static_u, pstat, residual)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", mj.PrecisionWarning)
                    if cost is None:  # one step: compile time, memory, run time
                        step_c, sl, sc = C.compile_fn(make_step(loss, opt), params,
                                                      opt_state, args)
                        cost = {"compile_s": sl + sc, "memory": C.xla_memory(step_c),
                                "step_s": time_step(step_c, (params, opt_state, args)),
                                "loss0": float(loss(params, args)),
                                "eps": list(st.eps), "margin": list(st.margin),
                                "interior_nodes": int(st.points.shape[0])}
                        log(f"  {pname} {arch} {method}: step compile {cost['compile_s']:.1f} "
                            f"s, XLA {C.fmt_bytes(cost['memory']['peak'])}, step "
                            f"{C.fmt_seconds(cost['step_s'])}, loss0 {cost['loss0']:.6g}")
                        del step_c
                    if not train_it:
                        log(f"  {pname} {arch} {method}: cost only (no training)")
                        return rows, cost
                    chunk_c, tl, tc = C.compile_fn(make_chunk(make_step(loss, opt), window),
                                                   params, opt_state, args)
                    lb = None
                    if lbfgs:
                        lb_opt, lb_chunk = make_lbfgs_chunk(loss)
                        lb_c, ll, lc = C.compile_fn(lb_chunk, params, lb_opt.init(params), args)
                        lb = (lb_opt, lb_c, ll + lc)
                compiled_cache[key] = (chunk_c, tl + tc, pstat, static_u, lb)
            chunk_c, chunk_compile, pstat0, static0, lb = compiled_cache[key]
            if pstat != pstat0 or static_u != static0:
                raise RuntimeError("static parts changed between runs: would recompile")
            params, rec = train(chunk_c, params, opt_state, args, window, cap)
            if lb is not None and rec["status"] != "diverged":
                adam_err = C.first_error(
                    {k: np.asarray(eqx.combine(params, static_u)[k].on_subgrid(st.grid))
                     for k in module.UNKNOWNS}, st.sims[seed])
                params, rec_l = train_lbfgs(lb[1], lb[0], params, args, lbfgs)
                rec = {**rec, "adam_rel_l2": adam_err["rel_l2"], "adam_corr": adam_err["corr"],
                       "adam_final_loss": rec["final_loss"], "lbfgs_steps": rec_l["steps"],
                       "lbfgs_status": rec_l["status"], "lbfgs_curve": rec_l["curve"],
                       "lbfgs_s": rec_l["train_s"], "lbfgs_compile_s": lb[2],
                       "final_loss": rec_l["final_loss"]}
            trained = eqx.combine(params, static_u)
            values = {k: np.asarray(trained[k].on_subgrid(st.grid)) for k in module.UNKNOWNS}
            err = C.first_error(values, st.sims[seed])
            row = {"problem": pname, "order": module.ORDER, "arch": arch, "method": method,
                   "noise": noise, "seed": seed, "eps": list(st.eps),
                   "grid": list(st.grid.shape), "chunk_compile_s": chunk_compile,
                   "rel_l2": err["rel_l2"], "corr": err["corr"], **rec}
            rows.append(row)
            if on_row is not None:
                on_row(row)
            extra = (f"; then L-BFGS {rec['lbfgs_status']} {rec['lbfgs_steps']} its "
                     f"{rec['lbfgs_s']:.1f} s (Adam's rel_l2 {rec['adam_rel_l2']:.3f})"
                     if "lbfgs_steps" in rec else "")
            log(f"    noise {noise:4.2f} seed {seed}: {rec['status']:8s} {rec['steps']:5d} "
                f"steps, loss {rec['final_loss']:.3e}, rel_l2 {err['rel_l2']:.3f}, corr "
                f"{err['corr']:.3f}, {rec['train_s']:.1f} s{extra}")
    return rows, cost


def check_losses(pname, module, st, seed, quick):
    """Initial loss: competent autodiff vs the library's `derivatives="autodiff"` (MLP)."""
    fields = build_fields(module, st.sims[seed], "mlp", seed, quick)
    params, static_u = eqx.partition(fields, eqx.is_inexact_array)
    prob = st.problem(seed, "autodiff")
    parr, pstat = eqx.partition(prob, eqx.is_array)
    loss = make_loss("autodiff", static_u, pstat, point_residual(pname, st.grid, module))
    ours = float(jax.jit(loss)(params, (parr, jnp.asarray(st.points),
                                        st.known_at_points(seed))))
    lib = mj.Problem(st.sims[seed], module.residuals, derivatives="autodiff", margin=st.margin,
                     conditions=st.conditions(seed))
    lib_loss = float(eqx.filter_jit(lambda f: lib.total(lib.loss_terms(f)))(fields))
    return {"competent": ours, "library_autodiff": lib_loss}


# ------------------------------------------------------------------ Figure-1 check
def figure1(archs, seeds, quick, log):
    n = 41 if quick else 101
    grid = mj.Grid.from_bounds((n,), (0.0,), (1.0,), axes=("x",))
    x = np.asarray(grid.coords("x"))
    g = np.sin(2 * np.pi * x) + 0.3 * np.sin(4 * np.pi * x)
    g4 = (2 * np.pi) ** 4 * np.sin(2 * np.pi * x) + 0.3 * (4 * np.pi) ** 4 * np.sin(4 * np.pi * x)
    opt = optimiser()
    rows = []
    for noise in NOISES:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            data = g + noise * np.std(g) * rng.standard_normal(n)
            eps = tuple(float(e) for e in mj.suggest_widths(grid, 4, {"g": data}))
            moll = mj.Mollifier(grid, eps, kernel=mj.Bump(), boundary="odd")
            # the plug-in width and kernel (`mj.spectral_widths`: Bump or Polynomial(6), of
            # lower estimated risk), from the noisy samples
            choice = mj.spectral_widths(grid, 4, {"g": data})
            kernel = choice.kernel
            spectral = mj.Mollifier(grid, choice.eps, kernel=kernel, boundary="odd")
            h = max(moll.halo[0], spectral.halo[0])
            inner = slice(h, n - h)

            def stats(d4, inner=inner):
                d4, t = np.asarray(d4)[inner], g4[inner]
                return {"corr": float(np.corrcoef(d4, t)[0, 1]),
                        "rel_l2": float(np.linalg.norm(d4 - t) / np.linalg.norm(t))}

            row0 = {"noise": noise, "seed": seed, "eps": eps[0], "halo": h,
                    "spectral_eps": choice.eps[0], "spectral_kernel": type(kernel).__name__}
            rows.append({**row0, "arch": "data", "method": "mollifier on data",
                         **stats(moll(jnp.asarray(data), "xxxx"))})
            rows.append({**row0, "arch": "data", "method": "mollifier on data, plug-in width",
                         **stats(spectral(jnp.asarray(data), "xxxx"))})
            for arch in archs:
                fields = build_fields_fig1(arch, grid, data, seed, quick)
                params, static_u = eqx.partition(fields, eqx.is_inexact_array)
                prob = mj.Problem(grid, {}, data={"g": jnp.asarray(data)})
                parr, pstat = eqx.partition(prob, eqx.is_array)
                loss = make_loss("mollifier", static_u, pstat)
                window, cap = ((20, 60) if quick else
                               (FIG1["window"][arch], FIG1["cap"][arch]))
                key = (arch,)
                if key not in figure1.cache:
                    figure1.cache[key] = C.compile_fn(make_chunk(make_step(loss, opt), window),
                                                      params, opt.init(params), parr)[0]
                params, rec = train(figure1.cache[key], params, opt.init(params), parr,
                                    window, cap)
                field = eqx.combine(params, static_u)["g"]
                d4_ad = jax.jit(jax.vmap(fourth_derivative(field, grid)))(
                    jnp.asarray(grid.points()))
                vals = field.on_subgrid(grid)
                for method, d4 in (("autodiff", d4_ad), ("mollifier", moll(vals, "xxxx")),
                                   ("mollifier, plug-in width", spectral(vals, "xxxx"))):
                    rows.append({**row0, "arch": arch, "method": method,
                                 "steps": rec["steps"], "status": rec["status"],
                                 "fit_rmse": float(np.sqrt(np.mean((np.asarray(vals) - g) ** 2))),
                                 **stats(d4)})
                log(f"  fig1 noise {noise:4.2f} seed {seed} {arch}: {rec['status']} "
                    f"{rec['steps']} steps; corr AD {rows[-3]['corr']:.3f} moll "
                    f"{rows[-2]['corr']:.3f}, plug-in ({type(kernel).__name__}, eps "
                    f"{choice.eps[0]:.3f}) {rows[-1]['corr']:.3f}")
    return rows


figure1.cache = {}


def fourth_derivative(field, grid):
    """`x -> d^4 field / dx^4` by nested forward mode (1-D)."""
    e = jnp.ones((1,))
    return _d(_d(_d(_d(lambda z: field.at_point(grid, None, z), e), e), e), e)


def build_fields_fig1(arch, grid, data, seed, quick):
    net = make_net(arch, 1, jax.random.PRNGKey(2000 + seed), quick)
    field = mj.NetworkField(net, grid.axes)
    if arch == "pirate":
        xi = jax.vmap(lambda x: field._scaled(grid, x))(jnp.asarray(grid.points()))
        field = mj.NetworkField(mj.pirate_init(net, xi, jnp.asarray(data)), grid.axes)
    return {"g": field}


# ------------------------------------------------------------------ report
def _ms(values):
    v = np.asarray([x for x in values if np.isfinite(x)])
    if v.size == 0:
        return "-"
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else f"{v[0]:.3f}"


def _train_s(row) -> float:
    """Training wall time of a run: Adam, and L-BFGS where it followed."""
    return row["train_s"] + row.get("lbfgs_s", 0.0)


def report(out) -> str:
    rows, costs, fig = out["runs"], out["costs"], out.get("figure1", [])
    lines = []
    probs = list(dict.fromkeys([r["problem"] for r in rows]
                               + [k.split("|")[0] for k in costs]))
    archs = [a for a in ARCHS if any(k.split("|")[1] == a for k in costs)]
    noises = sorted({r["noise"] for r in rows})

    def sel(**kw):
        return [r for r in rows if all(r[k] == v for k, v in kw.items())]

    lbfgs = any("lbfgs_steps" in r for r in rows)
    tables = [
        ("rel_l2", "L2", "Coefficient relative L2 error, mean ± standard deviation over seeds "
                         "(interior nodes, `mj.score`):\n"),
        ("corr", "corr", "\nCorrelation of the recovered coefficient with the truth, mean ± "
                         "standard deviation over seeds:\n"),
    ]
    if lbfgs:
        tables.append(("adam_rel_l2", "L2", "\nThe same error after the Adam stage alone "
                                            "(before L-BFGS):\n"))
    for key, label, caption in tables:
        t = []
        for p in probs:
            for a in archs:
                for m in METHODS:
                    if not sel(problem=p, arch=a, method=m):
                        continue
                    row = {"problem": p, "arch": a, "method": m}
                    for n in noises:
                        row[f"{label} {n:.0%}"] = _ms(
                            [r[key] for r in sel(problem=p, arch=a, method=m, noise=n)])
                    t.append(row)
        lines.append(caption)
        lines.append(C.format_table(t, list(t[0]) if t else []))

    t = []
    for p in probs:
        for a in archs:
            for m in METHODS:
                rr = sel(problem=p, arch=a, method=m)
                if not rr:
                    continue
                steps = [r["steps"] for r in rr]
                t.append({
                    "problem": p, "arch": a, "method": m, "runs": len(rr),
                    "plateau / capped / diverged": "{} / {} / {}".format(
                        *[sum(r["status"] == s for r in rr)
                          for s in ("plateau", "capped", "diverged")]),
                    "cap": max(steps) if any(r["status"] == "capped" for r in rr) else "",
                    "steps (median, range)": f"{int(np.median(steps))} ({min(steps)}-"
                                             f"{max(steps)})",
                    "final loss (median)": f"{np.median([r['final_loss'] for r in rr]):.3e}",
                    "train time / run (median)": C.fmt_seconds(
                        float(np.median([_train_s(r) for r in rr]))),
                })
                if lbfgs:
                    its = [r.get("lbfgs_steps", 0) for r in rr]
                    t[-1]["L-BFGS plateau / capped / diverged"] = "{} / {} / {}".format(
                        *[sum(r.get("lbfgs_status") == s for r in rr)
                          for s in ("plateau", "capped", "diverged")])
                    t[-1]["L-BFGS its (median, range)"] = (f"{int(np.median(its))} "
                                                           f"({min(its)}-{max(its)})")
    lines.append("\nConvergence per (problem, architecture, method): runs that met the plateau "
                 "rule, hit the step cap (not converged) or diverged; steps; final loss; "
                 "training wall time per run (compiled chunks, compilation excluded; Adam and "
                 "L-BFGS together where L-BFGS followed):\n")
    lines.append(C.format_table(t, list(t[0]) if t else []))

    t = []
    for key, c in costs.items():
        if not c:
            continue
        p, a, m = key.split("|")
        t.append({"problem": p, "arch": a, "method": m,
                  "residual nodes": c["interior_nodes"],
                  "step (median)": C.fmt_seconds(c["step_s"]),
                  "compile (step)": C.fmt_seconds(c["compile_s"]),
                  "XLA memory (step)": C.fmt_bytes(c["memory"]["peak"]),
                  "trained": "yes" if sel(problem=p, arch=a, method=m) else "cost only"})
    lines.append("\nCost of one training step (5 % noise set-up): median run time, compile time, "
                 "XLA memory analysis (argument + output + temp):\n")
    lines.append(C.format_table(t, list(t[0]) if t else []))

    t = []
    for p in probs:
        for a in archs:
            ca, cm = costs.get(f"{p}|{a}|autodiff"), costs.get(f"{p}|{a}|mollifier")
            if not (ca and cm):
                continue
            ra, rm = sel(problem=p, arch=a, method="autodiff"), sel(problem=p, arch=a,
                                                                  method="mollifier")
            row = {"problem": p, "arch": a, "mollifier lower mean error": "-",
                   "step time AD / moll": C.fmt_ratio(ca["step_s"] / cm["step_s"]),
                   "train time to stop AD / moll (median)": "-",
                   "XLA memory AD / moll": C.fmt_ratio(ca["memory"]["peak"]
                                                       / cm["memory"]["peak"])}
            if ra and rm:
                wins = sum(
                    np.mean([r["rel_l2"] for r in sel(problem=p, arch=a, method="mollifier",
                                                      noise=n)])
                    < np.mean([r["rel_l2"] for r in sel(problem=p, arch=a, method="autodiff",
                                                        noise=n)])
                    for n in noises)
                row["mollifier lower mean error"] = f"{wins} / {len(noises)} noise levels"
                row["train time to stop AD / moll (median)"] = C.fmt_ratio(
                    np.median([_train_s(r) for r in ra]) / np.median([_train_s(r)
                                                                      for r in rm]))
            t.append(row)
    lines.append("\nRatios, competent autodiff (AD) / mollifier:\n")
    lines.append(C.format_table(t, list(t[0]) if t else []))

    if out.get("checks"):
        t = [{"problem": p, "initial loss, competent autodiff": f"{v['competent']:.8g}",
              "initial loss, library autodiff": f"{v['library_autodiff']:.8g}"}
             for p, v in out["checks"].items()]
        lines.append("\nCheck: the competent baseline computes the library's autodiff loss "
                     "(MLP, seed 0, 5 % noise, same interior):\n")
        lines.append(C.format_table(t, list(t[0])))

    if fig:
        t = []
        for a in ["data"] + [a for a in ARCHS if any(r["arch"] == a for r in fig)]:
            ms = (["mollifier on data", "mollifier on data, plug-in width"] if a == "data"
                  else ["autodiff", "mollifier", "mollifier, plug-in width"])
            for m in ms:
                if not any(r["method"] == m for r in fig):
                    continue  # (a record from before the plug-in width)
                row = {"fitted": a, "4th derivative by": m}
                for n in NOISES:
                    rr = [r for r in fig if r["arch"] == a and r["method"] == m
                          and r["noise"] == n]
                    row[f"corr {n:.0%}"] = _ms([r["corr"] for r in rr])
                    row[f"L2 {n:.0%}"] = _ms([r["rel_l2"] for r in rr])
                t.append(row)
        lines.append("\nFigure-1 check: 4th derivative of the fitted network vs the analytic "
                     "one (mollifier interior), mean ± standard deviation over seeds:\n")
        lines.append(C.format_table(t, list(t[0])))
        capped = [r for r in fig if r.get("status") == "capped" and r["method"] == "autodiff"]
        lines.append(f"\nFigure-1 fits that hit the step cap: {len(capped)} of "
                     f"{sum(1 for r in fig if r['method'] == 'autodiff')}.")
    return "\n".join(lines)


def run_curve(row) -> tuple[np.ndarray, np.ndarray]:
    """`(steps, loss)` of one run: the Adam chunks, then the L-BFGS chunks (if any) after
    them, one point per chunk (its last loss)."""
    steps = row["window"] * np.arange(1, len(row["curve"]) + 1)
    loss = np.asarray(row["curve"], dtype=float)
    if row.get("lbfgs_curve"):
        more = row["steps"] + LBFGS_WINDOW * np.arange(1, len(row["lbfgs_curve"]) + 1)
        steps = np.concatenate([steps, more])
        loss = np.concatenate([loss, np.asarray(row["lbfgs_curve"], dtype=float)])
    return steps, loss


def merge_results(parts: list[dict]) -> dict:
    """One result from several JSON files of this script: runs concatenated, costs, checks
    and the Figure-1 check merged (the first file's settings and machine kept)."""
    out = {**parts[0], "runs": [], "costs": {}, "checks": {}}
    for part in parts:
        out["runs"].extend(part["runs"])
        for key in ("costs", "checks"):  # a split study measures a step once per process
            for name, value in part.get(key, {}).items():
                out[key].setdefault(name, value)  # the first file's measurement kept
        if "figure1" in part:
            out.setdefault("figure1", part["figure1"])  # the first file's
    return out


def plot_curves(out, path):
    """Learning curves, one panel per (problem, noise): every seed's run as a thin line
    (Adam, then L-BFGS where `--lbfgs` ran: a dot marks the switch), colour by
    architecture, solid for the mollifier and dashed for autodiff."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["runs"]
    probs = list(dict.fromkeys(r["problem"] for r in rows))
    noises = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(len(probs), len(noises), figsize=(3.2 * len(noises),
                                                               2.6 * len(probs)),
                             squeeze=False)
    colours = {"mlp": "C0", "pirate": "C1", "pinnsformer": "C2"}
    for i, p in enumerate(probs):
        for j, n in enumerate(noises):
            ax = axes[i][j]
            for a in ARCHS:
                for m, style in (("mollifier", "-"), ("autodiff", "--")):
                    rr = [r for r in rows if (r["problem"], r["arch"], r["method"], r["noise"])
                          == (p, a, m, n) and r["curve"]]
                    for k, r in enumerate(rr):
                        steps, loss = run_curve(r)
                        ax.loglog(steps, loss, style, color=colours[a], lw=0.8, alpha=0.8,
                                  label=f"{a} {m}" if k == 0 else None)
                        if r.get("lbfgs_curve"):
                            ax.plot(r["steps"], r["curve"][-1], ".", color=colours[a], ms=3)
            ax.set_title(f"{p}, noise {n:.0%}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(probs) - 1:
                ax.set_xlabel("step (Adam, then L-BFGS iterations)", fontsize=7)
            if j == 0:
                ax.set_ylabel("loss", fontsize=7)
    axes[0][0].legend(fontsize=5, ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


# ------------------------------------------------------------------ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke test (< 2 min)")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--noises", type=float, nargs="+", default=None,
                        help="run these noise levels only (default 0 0.01 0.05 0.1)")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None,
                        help="run these seeds instead of range(--seeds) (widths still from "
                             "seed 0's data), e.g. to split one study over several cores")
    parser.add_argument("--only", nargs="+", default=None,
                        help="filters `problem[:arch[:method]]`, e.g. forcing darcy2d:mlp")
    parser.add_argument("--no-figure1", action="store_true")
    parser.add_argument("--plug-in", action="store_true",
                        help="the mollifier's widths and kernel by mj.spectral_widths from the "
                             "noisy data (default: the rule, mj.suggest_widths, and Bump)")
    parser.add_argument("--lbfgs", type=int, default=0,
                        help="after each Adam run, L-BFGS to the plateau rule or this many "
                             "iterations (0: none)")
    parser.add_argument("--taylor", action="store_true",
                        help="chromatin's competent autodiff by Taylor mode (jax.experimental.jet)"
                             " instead of nested forward mode")
    parser.add_argument("--cost-only", action="store_true",
                        help="measure one training step per (problem, architecture, method) "
                             "(compile time, XLA memory, run time), train nothing")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the initial-loss check against the library's autodiff")
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--markdown", help="write the report tables to this Markdown file")
    parser.add_argument("--figure", help="write the learning curves to this PNG")
    parser.add_argument("--from-json", nargs="+",
                        help="report (and plot) the results in these JSON files (e.g. partial "
                             "ones, or one per process of a split study: their runs and costs "
                             "are merged) instead of running")
    args = parser.parse_args(argv)
    if args.from_json:
        import json

        out = merge_results([json.loads(pathlib.Path(f).read_text()) for f in args.from_json])
        text = report(out)
        print(text)
        if args.markdown:
            pathlib.Path(args.markdown).write_text(text + "\n")
        if args.figure and out["runs"]:
            plot_curves(out, args.figure)
        return
    cfgs = QUICK if args.quick else FULL
    seeds = list(args.seed_list) if args.seed_list else list(range(args.seeds))
    noises = (0.0, 0.05) if args.quick else NOISES
    if args.noises:
        noises = tuple(args.noises)
    archs = ("mlp",) if args.quick else ARCHS

    def wanted(p, a=None, m=None):
        if not args.only:
            return True
        for f in args.only:
            parts = f.split(":")
            if parts[0] != p:
                continue
            if a is not None and len(parts) > 1 and parts[1] != a:
                continue
            if m is not None and len(parts) > 2 and parts[2] != m:
                continue
            return True
        return False

    def log(msg):
        print(msg, flush=True)

    info = C.machine_info()
    log(C.describe_machine(info) + f"; affinity {sorted(os.sched_getaffinity(0))}")
    out = {"machine": info, "quick": args.quick, "settings": {
        "noises": list(noises), "seeds": seeds, "archs": list(archs), "tol": TOL, "lr": LR,
        "decay_steps": DECAY_STEPS, "decay": DECAY, "lbfgs": args.lbfgs,
        "plug_in": args.plug_in, "taylor": args.taylor, "cost_only": args.cost_only,
        "problems": {p: c for p, c in cfgs.items() if wanted(p)}},
        "runs": [], "costs": {}, "checks": {}}
    t_start = time.perf_counter()
    if not args.no_figure1 and (not args.only or any(f == "figure1" for f in args.only)):
        log("\n== Figure-1 check")
        out["figure1"] = figure1(archs, seeds, args.quick, log)
        log(f"  elapsed {time.perf_counter() - t_start:.0f} s")
    for pname, cfg in cfgs.items():
        if not wanted(pname):
            continue
        module = mj.load_problem(pname)
        setups = {n: Setup(pname, module, cfg["params"], n, seeds, args.quick, args.plug_in)
                  for n in noises}
        log(f"\n== {pname} (order {module.ORDER}), grid {setups[noises[0]].grid.shape}, eps per "
            f"noise { {n: round(s.eps[0], 4) for n, s in setups.items()} }, margins "
            f"{ {n: s.margin for n, s in setups.items()} }")
        if not args.no_check:
            st = setups[0.05]
            out["checks"][pname] = check_losses(pname, module, st, seeds[0], args.quick)
            log(f"  check (initial loss): {out['checks'][pname]}")
        for arch in archs:
            for method in METHODS:
                if not wanted(pname, arch, method):
                    continue
                def save_partial(row):
                    out["runs"].append(row)
                    if args.json:
                        C.write_json(args.json, {**out, "partial": True})

                _, cost = run_config(pname, module, setups, arch, method, seeds, cfg,
                                     args.quick, log, args.lbfgs, on_row=save_partial,
                                     taylor=args.taylor, cost_only=args.cost_only)
                out["costs"][f"{pname}|{arch}|{method}"] = cost
                if args.json:
                    C.write_json(args.json, {**out, "partial": True})
        log(f"  elapsed {time.perf_counter() - t_start:.0f} s")
    out["wall_s"] = time.perf_counter() - t_start
    text = report(out)
    print()
    print(text)
    print(f"\nTotal wall time {out['wall_s']:.0f} s")
    if args.json:
        C.write_json(args.json, out)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text + "\n")
    if args.figure and out["runs"]:
        plot_curves(out, args.figure)


if __name__ == "__main__":
    main()
