"""Gaussian mixtures under the backward heat flow, and the particle flows that transport them.

With noise covariance `tau A` (a positive semi-definite `d x d` matrix, `A = I` for the
isotropic case), an ideal Gaussian denoising autoencoder moves a point by
`tau A grad log(W_{tau A} * mu)`. Stacking infinitely many layers of vanishing noise gives the
particle flow

    dx/dt = A grad log mu_t(x),

and by the continuity equation the density obeys `d mu/dt = -div(mu A grad log mu) =
-div(A grad mu)`, the backward heat equation with diffusion tensor `-A`. In Fourier space
`mu_hat_t(k) = exp(t k^T A k) mu_hat_0(k)`, so a Gaussian `N(m, S)` stays Gaussian with
covariance `S - 2 t A` and a Gaussian mixture stays a mixture with the same weights and means
and covariances `S_k - 2 t A`, as long as those stay positive definite. This module holds that
exact solution, its score (the exact velocity), RK4 integration of the particle flow, a
Brownian control, and entropy / Fisher information by quadrature on a grid.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

import mollijax as mj

# numbers given as arrays, scalars or nested Python lists (weights, covariances, noise, times)
Numbers = ArrayLike | Sequence

class MixtureError(mj.MollijaxError):
    """A Gaussian mixture or its flow is ill-posed (bad weights, covariances, or times)."""


def _as_matrix(a, dim: int, name: str) -> np.ndarray:
    """A scalar, a length-`dim` diagonal or a `dim x dim` matrix as a float64 matrix."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr) * np.eye(dim)
    if arr.shape == (dim,):
        return np.diag(arr)
    if arr.shape == (dim, dim):
        return arr
    raise MixtureError(
        f"`{name}` must be a scalar, a length-{dim} diagonal or a {dim}x{dim} matrix, "
        f"got shape {arr.shape}."
    )


def noise_matrix(a, dim: int, name: str = "noise") -> np.ndarray:
    """Validate a noise (or diffusion) covariance: symmetric positive semi-definite."""
    m = _as_matrix(a, dim, name)
    if not np.allclose(m, m.T):
        raise MixtureError(f"`{name}` must be symmetric, got {m.tolist()}.")
    if np.linalg.eigvalsh(m).min() < -1e-12:
        raise MixtureError(f"`{name}` must be positive semi-definite, got {m.tolist()}.")
    return m


class GaussianMixture(eqx.Module):
    """`mu(x) = sum_k w_k N(x; m_k, S_k)` in `d` dimensions.

    **Arguments:**

    - `weights`: shape `(K,)`, positive, normalised on construction.
    - `means`: shape `(K, d)`.
    - `covs`: shape `(K, d, d)` symmetric positive definite; `(K,)` or `(K, d)` are read as
      isotropic or diagonal covariances.
    """

    weights: Float[Array, " K"]
    means: Float[Array, "K d"]
    covs: Float[Array, "K d d"]

    def __init__(self, weights: Numbers, means: Numbers, covs: Numbers):
        w = np.asarray(weights, dtype=np.float64)
        m = np.asarray(means, dtype=np.float64)
        if m.ndim != 2:
            raise MixtureError(f"`means` must have shape (K, d), got shape {m.shape}.")
        k, d = m.shape
        if w.shape != (k,) or not np.all(w > 0):
            raise MixtureError(
                f"`weights` must be {k} positive numbers (one per mean), got {w.tolist()}."
            )
        c = np.asarray(covs, dtype=np.float64)
        if c.shape == (k,):
            c = c[:, None, None] * np.eye(d)
        elif c.shape == (k, d):
            c = np.stack([np.diag(ci) for ci in c])
        if c.shape != (k, d, d):
            raise MixtureError(
                f"`covs` must have shape ({k},), ({k}, {d}) or ({k}, {d}, {d}), got {c.shape}."
            )
        _check_spd(c, "covs")
        self.weights = jnp.asarray(w / w.sum())
        self.means = jnp.asarray(m)
        self.covs = jnp.asarray(c)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def log_density(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """`log mu(x)` at one point (use `jax.vmap` for many)."""
        diff = x[None, :] - self.means
        chol = jnp.linalg.cholesky(self.covs)
        z = jax.vmap(lambda c, r: jax.scipy.linalg.solve_triangular(c, r, lower=True))(chol, diff)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
        d = self.dim
        comp = -0.5 * jnp.sum(z**2, axis=1) - 0.5 * logdet - 0.5 * d * np.log(2 * np.pi)
        return logsumexp(comp + jnp.log(self.weights))

    def score(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """`grad log mu(x)` at one point."""
        return jax.grad(self.log_density)(x)

    def smoothed(self, cov: Numbers) -> GaussianMixture:
        """`mu * N(0, cov)`: every component covariance plus `cov` (may be negative: backward)."""
        c = jnp.asarray(_as_matrix(cov, self.dim, "cov"))
        return GaussianMixture(np.asarray(self.weights), np.asarray(self.means),
                               np.asarray(self.covs + c[None]))

    def at(self, t: float, noise: Numbers = 1.0) -> GaussianMixture:
        """The backward-heat solution `mu_t`: covariances `S_k - 2 t A` (`A = noise`)."""
        a = noise_matrix(noise, self.dim)
        return self.smoothed(-2.0 * float(t) * a)

    def max_time(self, noise: Numbers = 1.0) -> float:
        """Largest `t` with every `S_k - 2 t A` still positive definite (`inf` if none ends)."""
        a = noise_matrix(noise, self.dim)
        t_max = np.inf
        for s in np.asarray(self.covs):
            # S - 2tA > 0  <=>  2t < 1 / lambda_max(S^{-1/2} A S^{-1/2})
            w, v = np.linalg.eigh(s)
            s_inv_half = v @ np.diag(w**-0.5) @ v.T
            lam = np.linalg.eigvalsh(s_inv_half @ a @ s_inv_half).max()
            if lam > 0:
                t_max = min(t_max, 0.5 / lam)
        return float(t_max)

    def ornstein_uhlenbeck(self, drift_matrix: Numbers, drift_constant: Numbers,
                           diffusion: Numbers, t: float) -> GaussianMixture:
        """The exact law at time `t` of `dx = (G x + c) dt + (2 D)^{1/2} dW` started from
        this mixture: the same weights, each component `N(m, S)` carried to

            m(t) = e^{tG} m + int_0^t e^{sG} ds c,
            S(t) = e^{tG} S e^{tG^T} + int_0^t e^{sG} 2 D e^{sG^T} ds,

        both integrals from one matrix exponential of a block matrix each (Van Loan's
        construction for the second). The density obeys the Fokker-Planck equation
        `d rho/dt = -div((G x + c) rho) + D : Hess rho` exactly, which makes this the
        known answer for `fit_fokker_planck` in any dimension."""
        e_tg, shift, added = ou_transition(drift_matrix, drift_constant, diffusion, t,
                                           self.dim)
        covs = np.einsum("ij,kjl,ml->kim", e_tg, np.asarray(self.covs), e_tg) + added
        covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))
        means = np.asarray(self.means) @ e_tg.T + shift
        return GaussianMixture(np.asarray(self.weights), means, covs)

    def density_on(self, grid: mj.Grid) -> Float[Array, "*grid"]:
        """`mu` at every node of `grid` (a `d`-D grid)."""
        if grid.ndim != self.dim:
            raise MixtureError(f"`grid` must be {self.dim}-D for this mixture, got "
                               f"{grid.ndim}-D.")
        mesh = jnp.stack([jnp.asarray(m, self.means.dtype) for m in grid.mesh()], axis=-1)
        flat = mesh.reshape(-1, self.dim)
        return jnp.exp(jax.vmap(self.log_density)(flat)).reshape(grid.shape)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """`n` independent samples."""
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.choice(k_comp, self.weights.shape[0], (n,), p=self.weights)
        chol = jnp.linalg.cholesky(self.covs)[comp]
        xi = jax.random.normal(k_noise, (n, self.dim), dtype=self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", chol, xi)


def ou_transition(drift_matrix: Numbers, drift_constant: Numbers, diffusion: Numbers,
                  t: float, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(e^{tG}, int_0^t e^{sG} ds c, Q_t)`: the exact transition of
    `dx = (G x + c) dt + (2 D)^{1/2} dW` over time `t`, `x(t) = e^{tG} x(0) + shift + N(0, Q_t)`
    with `Q_t = int_0^t e^{sG} 2 D e^{sG^T} ds`; each from one matrix exponential of a block
    matrix (Van Loan's construction for `Q_t`)."""
    import scipy.linalg

    g = _as_matrix(drift_matrix, dim, "drift_matrix")
    c = np.asarray(drift_constant, dtype=np.float64).reshape(-1)
    if c.shape != (dim,):
        raise MixtureError(f"`drift_constant` must have shape ({dim},), got {c.shape}.")
    dm = noise_matrix(diffusion, dim, "diffusion")
    aug = np.zeros((dim + 1, dim + 1))
    aug[:dim, :dim], aug[:dim, dim] = g, c
    flow = scipy.linalg.expm(float(t) * aug)
    block = np.zeros((2 * dim, 2 * dim))
    block[:dim, :dim], block[:dim, dim:], block[dim:, dim:] = -g, 2.0 * dm, g.T
    f = scipy.linalg.expm(float(t) * block)
    q = f[dim:, dim:].T @ f[:dim, dim:]
    return flow[:dim, :dim], flow[:dim, dim], 0.5 * (q + q.T)


def _check_spd(c: np.ndarray, name: str) -> None:
    for i, ci in enumerate(c):
        if not np.allclose(ci, ci.T) or np.linalg.eigvalsh(ci).min() <= 0:
            raise MixtureError(
                f"`{name}[{i}]` must be symmetric positive definite, got {ci.tolist()} "
                "(a backward-heat flow past its blow-up time makes a covariance indefinite)."
            )


def _check_times(times, t_max: float | None = None) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0):
        raise MixtureError(f"`times` must be at least 2 increasing numbers, got {t.tolist()}.")
    if t_max is not None and t[-1] >= t_max:
        raise MixtureError(
            f"`times` must end before the flow's blow-up time {t_max:.6g}, got last time {t[-1]}."
        )
    return t


def exact_velocity(
    mixture: GaussianMixture, x: Float[Array, "n d"], t: Float[ArrayLike, ""], noise: Array
) -> Float[Array, "n d"]:
    """`v(x, t) = A grad log mu_t(x)` at `n` points, `mu_t` the mixture with covariances
    `S_k - 2 t A`: `v = -A sum_k r_k(x) S_k(t)^{-1} (x - m_k)` with the responsibilities
    `r_k(x)` of the components at `x`."""
    covs = mixture.covs - 2.0 * t * noise[None]
    prec = jnp.linalg.inv(covs)  # (K, d, d), once per time
    logdet = jnp.linalg.slogdet(covs)[1]
    diff = x[:, None, :] - mixture.means[None]  # (n, K, d)
    z = jnp.einsum("kij,nkj->nki", prec, diff)
    logp = jnp.log(mixture.weights) - 0.5 * jnp.sum(diff * z, axis=2) - 0.5 * logdet
    resp = jax.nn.softmax(logp, axis=1)
    return -jnp.einsum("ij,nj->ni", noise, jnp.sum(resp[..., None] * z, axis=1))


@functools.partial(jax.jit, static_argnames="substeps")
def _rk4_flow(mixture, x0, bounds, noise, substeps):
    v = lambda x, s: exact_velocity(mixture, x, s, noise)

    def rk4(x, s_h):
        s, h = s_h
        k1 = v(x, s)
        k2 = v(x + 0.5 * h * k1, s + 0.5 * h)
        k3 = v(x + 0.5 * h * k2, s + 0.5 * h)
        k4 = v(x + h * k3, s + h)
        return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

    def interval(x, b):
        h = (b[1] - b[0]) / substeps
        starts = b[0] + h * jnp.arange(substeps, dtype=x.dtype)
        x, _ = jax.lax.scan(rk4, x, (starts, jnp.full((substeps,), h, x.dtype)))
        return x, x

    _, xs = jax.lax.scan(interval, x0, bounds)
    return jnp.concatenate([x0[None], xs], axis=0)


def exact_flow(
    mixture: GaussianMixture,
    x0: Float[ArrayLike, "n d"],
    times: Numbers,
    noise: Numbers = 1.0,
    substeps: int = 8,
) -> Float[Array, "T n d"]:
    """Particles moved by `dx/dt = A grad log mu_t(x)` (the infinitely deep DAE), by RK4.

    **Arguments:** `x0` of shape `(n, d)` sampled from `mixture` at `times[0] = t_0`; `times`
    increasing, ending before `mixture.max_time(noise)`; `noise` the matrix `A`; `substeps`
    RK4 steps between consecutive times.

    **Returns:** positions at every time, shape `(T, n, d)`, `T = len(times)`. Global error
    `O(dt^4)` per particle while the flow is smooth (it steepens near the blow-up time).
    """
    a = noise_matrix(noise, mixture.dim)
    t = _check_times(times, mixture.max_time(a))
    x0 = jnp.asarray(x0)
    bounds = jnp.asarray(np.stack([t[:-1], t[1:]], axis=1), x0.dtype)
    return _rk4_flow(mixture, x0, bounds, jnp.asarray(a, x0.dtype), int(substeps))


def brownian_flow(
    key: PRNGKeyArray, x0: Float[ArrayLike, "n d"], times: Numbers,
    diffusion: Numbers = 1.0,
) -> Float[Array, "T n d"]:
    """Control experiment: `dX = B^{1/2} dW` (`B = diffusion`), sampled exactly at `times`.

    The density obeys the forward heat equation `d rho/dt = (1/2) div(B grad rho)`, so the
    fitted diffusion tensor is `+B/2` (`+0.5 I` for `B = I`).
    """
    x0 = jnp.asarray(x0)
    b = noise_matrix(diffusion, x0.shape[1], "diffusion")
    root = jnp.asarray(_psd_sqrt(b))
    t = _check_times(times)
    dt = jnp.asarray(np.diff(t))
    xi = jax.random.normal(key, (dt.shape[0],) + x0.shape, dtype=x0.dtype)
    steps = jnp.sqrt(dt)[:, None, None] * jnp.einsum("ij,tnj->tni", root, xi)
    return jnp.concatenate([x0[None], x0[None] + jnp.cumsum(steps, axis=0)], axis=0)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return v @ np.diag(np.sqrt(np.clip(w, 0.0, None))) @ v.T


def oracle_dae_layer(
    mixture: GaussianMixture, x: Float[Array, "n d"], tau: float, noise: Numbers = 1.0
) -> Float[Array, "n d"]:
    """The optimal DAE of noise `tau A` for data `~ mixture`, applied to clean points.

    `x -> E[x | x + e = x~]` at `x~ = x`, `e ~ N(0, tau A)`, which by Tweedie's formula is
    `x + tau A grad log(mu * W_{tau A})(x)` (Sonoda & Murata, eq. for the ideal DAE).
    """
    a = noise_matrix(noise, mixture.dim)
    smooth = mixture.smoothed(tau * a)
    return x + tau * jax.vmap(smooth.score)(x) @ jnp.asarray(a).T


def oracle_dae_stack(
    mixture: GaussianMixture, x0: Float[ArrayLike, "n d"], total_time: float, layers: int,
    noise: Numbers = 1.0,
) -> Float[Array, "T n d"]:
    """`layers` ideal DAE layers of noise `tau = total_time / layers`; layer `k` is optimal for
    the flow's density `mu_{k tau}` (what it would learn from the previous layer's features).

    Converges to `exact_flow` at `times = k tau` with error `O(tau)` (first order in depth).
    """
    tau = float(total_time) / int(layers)
    a = noise_matrix(noise, mixture.dim)
    if total_time >= mixture.max_time(a):
        raise MixtureError(
            f"`total_time` must be below the blow-up time {mixture.max_time(a):.6g}, "
            f"got {total_time}."
        )
    xs = [jnp.asarray(x0)]
    for k in range(int(layers)):
        xs.append(oracle_dae_layer(mixture.at(k * tau, a), xs[-1], tau, a))
    return jnp.stack(xs)


def shallow_dae_variance(s0: float, t: float) -> float:
    """Variance of `N(0, s0)` after one optimal DAE of noise variance `t`: `s0^3 / (s0 + t)^2`.

    The optimal denoiser is `x~ -> x~ s0 / (s0 + t)`; applied to clean data it scales the
    variance by `(s0 / (s0 + t))^2`.
    """
    return s0**3 / (s0 + t) ** 2


def deep_dae_variance(s0: float, t: float, layers: int) -> float:
    """`layers` stacked optimal DAEs of noise `t / layers` each, each fitted to the previous
    layer's output: iterate `s -> s^3 / (s + tau)^2 = s - 2 tau + 3 tau^2 / s + O(tau^3)`,
    `tau = t / L`. Tends to `s0 - 2 t` with error `(3 t / 2 L) log(s0 / (s0 - 2 t)) + O(L^-2)`
    (the sum of the per-layer `3 tau^2 / s_k`): first order in depth."""
    tau = t / layers
    s = s0
    for _ in range(layers):
        s = shallow_dae_variance(s, tau)
    return s


# ----------------------------------------------------------------- entropy and Fisher information


def entropy_fisher(
    mixture: GaussianMixture, grid: mj.Grid, noise: Numbers = 1.0
) -> tuple[float, float, float]:
    """`H = -int mu log mu`, `I_A = int (grad log mu)^T A grad log mu mu` and the mass
    `int mu`, by the midpoint/trapezoid rule on `grid` (which should cover the mixture to
    `~1e-10` of its mass; with `A = I`, `I_A` is the Fisher information).

    Along the backward heat flow `d mu/dt = -div(A grad mu)`, `dH/dt = -I_A` (the flow is
    the Wasserstein gradient flow of the entropy). The quadrature is spectrally accurate for
    a smooth density decaying inside the box.
    """
    a = jnp.asarray(noise_matrix(noise, mixture.dim))
    dv = float(np.prod(grid.spacing))
    h, fisher, mass = _entropy_fisher_sums(mixture, jnp.asarray(grid.points()), a)
    return float(h) * dv, float(fisher) * dv, float(mass) * dv


@jax.jit
def _entropy_fisher_sums(mixture, pts, a):
    logp = jax.vmap(mixture.log_density)(pts)
    score = jax.vmap(mixture.score)(pts)
    p = jnp.exp(logp)
    return (-jnp.sum(p * logp), jnp.sum(p * jnp.einsum("ni,ij,nj->n", score, a, score)),
            jnp.sum(p))
