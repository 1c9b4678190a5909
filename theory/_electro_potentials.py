"""Potentials `Phi(theta, w) = E_x[sigma(theta, x) sigma(w, x)]` of one-hidden-layer units.

For a student `f(x) = sum_i a_i sigma(theta_i, x)` and a teacher `y(x) = sum_j b_j sigma(w_j, x)`
the squared loss is an electrostatic energy,

    E_x[(f - y)^2] = sum_{i,i'} a_i a_i' Phi(theta_i, theta_i')
                     - 2 sum_{i,j} a_i b_j Phi(theta_i, w_j) + sum_{j,j'} b_j b_j' Phi(w_j, w_j'),

so everything about gradient descent is decided by the potential `Phi`. This module holds

- closed-form potentials of classical activations with Gaussian inputs `x ~ N(0, I_d)`
  (sign, normalised Hermite, ReLU), with a Monte Carlo estimator to check them;
- the modified Bessel function `K_0`, written from its series and integral representations;
- translation-invariant units `Phi(theta, w) = G(theta - w)` in the plane: the mollified
  screened Green's function (`ScreenedUnit`, almost lambda-harmonic) and the Gaussian
  (`GaussianUnit`), both realised by random Fourier features.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

import mollijax as mj

_EULER_GAMMA = 0.57721566490153286061

# --------------------------------------------------------------------------- activations


def sign_activation(z: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    """`sigma(z) = sign(z)` (the value at 0 has probability zero under Gaussian inputs)."""
    return jnp.sign(z)


def relu_activation(z: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    """`sigma(z) = max(z, 0)`."""
    return jnp.maximum(z, 0.0)


def hermite_activation(z: Float[Array, "*batch"], m: int) -> Float[Array, "*batch"]:
    """Normalised probabilists' Hermite polynomial `He_m(z) / sqrt(m!)`.

    Uses the three-term recurrence `He_{n+1}(z) = z He_n(z) - n He_{n-1}(z)`,
    `He_0 = 1`, `He_1 = z`. Under `z ~ N(0, 1)` these are orthonormal.
    """
    if not (isinstance(m, int) and m >= 0):
        raise mj.MollijaxError(f"Hermite degree `m` must be a non-negative int, got {m!r}.")
    prev, cur = jnp.ones_like(z), z
    if m == 0:
        return prev
    for n in range(1, m):
        prev, cur = cur, z * cur - n * prev
    return cur / math.sqrt(math.factorial(m))


def _cosine(theta, w):
    nt = jnp.linalg.norm(theta, axis=-1)
    nw = jnp.linalg.norm(w, axis=-1)
    return jnp.clip(jnp.sum(theta * w, axis=-1) / (nt * nw), -1.0, 1.0), nt, nw


def sign_potential(
    theta: Float[Array, "*batch d"], w: Float[Array, "*batch d"]
) -> Float[Array, "*batch"]:
    """`E[sign(theta.x) sign(w.x)] = 1 - (2 / pi) arccos(cos angle(theta, w))`, x ~ N(0, I).

    Scale invariant: only the directions of `theta`, `w` (the sphere) matter. Exact.
    """
    c, _, _ = _cosine(theta, w)
    return 1.0 - (2.0 / jnp.pi) * jnp.arccos(c)


def hermite_potential(
    theta: Float[Array, "*batch d"], w: Float[Array, "*batch d"], m: int
) -> Float[Array, "*batch"]:
    """`E[He_m(theta.x) He_m(w.x)] / m! = (theta . w)^m` for unit `theta`, `w`, x ~ N(0, I).

    Inputs are projected onto the unit sphere first. Exact (Mehler's formula).
    """
    c, _, _ = _cosine(theta, w)
    return c**m


def relu_potential(
    theta: Float[Array, "*batch d"], w: Float[Array, "*batch d"]
) -> Float[Array, "*batch"]:
    """Arc-cosine kernel of degree 1: `E[relu(theta.x) relu(w.x)]`, x ~ N(0, I_d).

        Phi = |theta| |w| (sin a + (pi - a) cos a) / (2 pi),   a = angle(theta, w).

    Exact; `Phi(theta, theta) = |theta|^2 / 2`.
    """
    c, nt, nw = _cosine(theta, w)
    a = jnp.arccos(c)
    return nt * nw * (jnp.sqrt(1.0 - c * c) + (jnp.pi - a) * c) / (2.0 * jnp.pi)


@eqx.filter_jit
def monte_carlo_potential(
    activation: Callable[[Float[Array, "*batch"]], Float[Array, "*batch"]],
    theta: Float[Array, " d"],
    w: Float[Array, " d"],
    key: PRNGKeyArray,
    n: int,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Monte Carlo `E_x[sigma(theta.x) sigma(w.x)]` over `n` draws of `x ~ N(0, I_d)`.

    **Returns:** `(mean, standard_error)`, the error being `std / sqrt(n)` of the products.
    """
    x = jax.random.normal(key, (n, theta.shape[-1]), dtype=theta.dtype)
    prod = activation(x @ theta) * activation(x @ w)
    return jnp.mean(prod), jnp.std(prod) / math.sqrt(n)


# --------------------------------------------------------------------------- Bessel K_0


def _bessel_k0_series(z):
    """`K_0(z) = -(ln(z/2) + gamma) I_0(z) + sum_{k>=1} H_k (z^2/4)^k / (k!)^2` (z <= 2)."""
    q = z * z / 4.0
    term = jnp.ones_like(z)
    i0 = jnp.ones_like(z)
    tail = jnp.zeros_like(z)
    harmonic = 0.0
    for k in range(1, 20):  # (z^2/4)^k / (k!)^2 < 1e-34 at k = 20 for z <= 2
        term = term * q / (k * k)
        harmonic += 1.0 / k
        i0 = i0 + term
        tail = tail + harmonic * term
    return -(jnp.log(z / 2.0) + _EULER_GAMMA) * i0 + tail


# trapezoid nodes for K_0(z) = int_0^inf exp(-z cosh t) dt (error ~ exp(-pi^2 / h))
_K0_STEP = 0.1
_K0_NODES = np.arange(0.0, 7.0 + _K0_STEP / 2, _K0_STEP)
_K0_WEIGHTS = np.full(_K0_NODES.shape, _K0_STEP)
_K0_WEIGHTS[0] = _K0_STEP / 2


def _bessel_k0_integral(z):
    """`K_0(z) = int_0^inf exp(-z cosh t) dt` by the trapezoid rule (accurate for z >= 0.5)."""
    cosh = jnp.asarray(np.cosh(_K0_NODES), dtype=z.dtype)
    weights = jnp.asarray(_K0_WEIGHTS, dtype=z.dtype)
    return jnp.sum(weights * jnp.exp(-z[..., None] * cosh), axis=-1)


@eqx.filter_jit
def bessel_k0(z: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    """Modified Bessel function of the second kind `K_0(z)` for `z > 0`.

    Power series (`z <= 2`) or the trapezoid rule on `int_0^inf exp(-z cosh t) dt` (`z > 2`),
    both to about 1e-15 relative in float64. Differentiable; `K_0'(z) = -K_1(z)`.
    """
    z = jnp.asarray(z)
    small = z <= 2.0
    zs = jnp.where(small, z, 1.0)
    zl = jnp.where(small, 3.0, z)
    return jnp.where(small, _bessel_k0_series(zs), _bessel_k0_integral(zl))


@eqx.filter_jit
def exp1(x: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    """Exponential integral `E_1(x) = int_x^inf e^-t / t dt` for `0 < x <= 1` (series).

    `E_1(x) = -gamma - ln x + sum_{k>=1} (-1)^(k+1) x^k / (k k!)`, 1e-15 relative for x <= 1.
    """
    x = jnp.asarray(x)
    term = jnp.ones_like(x)
    total = jnp.zeros_like(x)
    for k in range(1, 25):  # x^k / (k k!) < 1e-26 at k = 25 for x <= 1
        term = -term * x / k
        total = total - term / k
    return -_EULER_GAMMA - jnp.log(x) + total


# ---------------------------------------------------------------------- translation-invariant units


class AbstractUnit(eqx.Module):
    """A unit whose potential is translation invariant, `Phi(theta, w) = G(theta - w)`.

    `G` is positive definite, so `sigma(theta, x) = sqrt(2 G(0)) cos(omega . theta + beta)` with
    `x = (omega, beta)`, `omega ~ G_hat / ((2 pi)^d G(0))`, `beta ~ U[0, 2 pi)` realises it:
    `E_x[sigma(theta, x) sigma(w, x)] = G(theta - w)` (Bochner).
    """

    @abc.abstractmethod
    def potential(self, diff: Float[Array, "*batch d"]) -> Float[Array, "*batch"]:
        """`G(theta - w)` as a function of the difference `diff = theta - w`."""

    @abc.abstractmethod
    def spectrum(self, k2: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        """2-D Fourier transform `G_hat(k) = int G(r) exp(-i k.r) dr` as a function of `|k|^2`."""

    def self_energy(self) -> Float[Array, ""]:
        """`Phi(0) = G(0)`, the energy of one unit charge with itself."""
        return self.potential(jnp.zeros((2,)))


class ScreenedUnit(AbstractUnit):
    """Mollified screened Green's function in 2-D: `(lambda - Laplacian) G = rho_delta`.

    `rho_delta(r) = exp(-r^2 / (2 delta^2)) / (2 pi delta^2)` is a Gaussian core of width
    `delta`, so `Laplacian G = lambda G - rho_delta`: lambda-harmonic up to `rho_delta`, which is
    below 1e-8 of the peak beyond `6 delta`. In closed form (heat-kernel representation)

        G(r) = exp(lambda t0) int_{t0}^inf exp(-lambda t - r^2 / (4 t)) / (4 pi t) dt,

    `t0 = delta^2 / 2`, evaluated with Gauss-Legendre in `u = ln(t / t0)` (1e-13 relative).
    Far from the core `G(r) ~ exp(lambda t0) K_0(sqrt(lambda) r) / (2 pi)`;
    `G(0) = exp(lambda t0) E_1(lambda t0) / (4 pi)`; `G_hat(k) = exp(-delta^2 k^2 / 2) /
    (lambda + k^2)` is positive, so the unit is realised by random Fourier features.

    **Arguments:** `lam > 0` (screening, `1 / sqrt(lam)` is the range), `delta > 0` (core).
    """

    lam: float = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    nodes: int = eqx.field(static=True, default=200)

    def __check_init__(self):
        for name in ("lam", "delta"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise mj.MollijaxError(
                    f"ScreenedUnit `{name}` must be a positive finite number, got {value!r}."
                )
        if self.lam * self.delta**2 / 2 >= 1.0:
            raise mj.MollijaxError(
                f"ScreenedUnit needs a core smaller than the screening length, lam * delta^2 "
                f"/ 2 < 1; got lam={self.lam!r}, delta={self.delta!r}."
            )

    def _quadrature(self):
        t0 = self.delta**2 / 2
        upper = math.log(60.0 / (self.lam * t0))
        x, wq = np.polynomial.legendre.leggauss(self.nodes)
        u = (x + 1.0) * upper / 2
        return t0, np.exp(u), wq * upper / 2

    def potential(self, diff: Float[Array, "*batch 2"]) -> Float[Array, "*batch"]:
        t0, growth, weights = self._quadrature()
        r2 = jnp.sum(diff * diff, axis=-1)[..., None]
        growth = jnp.asarray(growth, dtype=diff.dtype)
        weights = jnp.asarray(weights, dtype=diff.dtype)
        integrand = jnp.exp(-self.lam * t0 * growth - r2 / (4.0 * t0 * growth))
        return math.exp(self.lam * t0) / (4.0 * math.pi) * jnp.sum(weights * integrand, -1)

    def spectrum(self, k2: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        return jnp.exp(-(self.delta**2) * k2 / 2.0) / (self.lam + k2)

    def core(self, diff: Float[Array, "*batch 2"]) -> Float[Array, "*batch"]:
        """`rho_delta(diff) = lambda G - Laplacian G`, the mollified point source."""
        r2 = jnp.sum(diff * diff, axis=-1)
        return jnp.exp(-r2 / (2.0 * self.delta**2)) / (2.0 * math.pi * self.delta**2)

    def far_field(self, r: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        """`exp(lam t0) K_0(sqrt(lam) r) / (2 pi)`: `G` outside the core (error ~ rho_delta)."""
        t0 = self.delta**2 / 2
        return math.exp(self.lam * t0) * bessel_k0(math.sqrt(self.lam) * r) / (2 * math.pi)

    def self_energy(self) -> Float[Array, ""]:
        x = self.lam * self.delta**2 / 2
        return math.exp(x) * exp1(jnp.asarray(x)) / (4.0 * math.pi)


class GaussianUnit(AbstractUnit):
    """Gaussian potential `G(r) = exp(-|r|^2 / (2 s^2))` (an RBF unit), `s = width`.

    `Laplacian G = (|r|^2 / s^2 - 2) G / s^2` is not proportional to `G`, so the
    electrostatic argument does not apply: an electron between two protons closer than `s`
    feels a single merged well. `G_hat(k) = 2 pi s^2 exp(-s^2 k^2 / 2)`.
    """

    width: float = eqx.field(static=True)

    def __check_init__(self):
        if not (isinstance(self.width, int | float) and math.isfinite(self.width)
                and self.width > 0):
            raise mj.MollijaxError(
                f"GaussianUnit `width` must be a positive finite number, got {self.width!r}."
            )

    def potential(self, diff: Float[Array, "*batch d"]) -> Float[Array, "*batch"]:
        return jnp.exp(-jnp.sum(diff * diff, axis=-1) / (2.0 * self.width**2))

    def spectrum(self, k2: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        s2 = self.width**2
        return 2.0 * math.pi * s2 * jnp.exp(-s2 * k2 / 2.0)


def torus_potential(
    unit: AbstractUnit, shape: tuple[int, int], length: float
) -> Float[Array, "n0 n1"]:
    """The periodised potential `G_T(theta) = sum_n G(theta + n L)` on the nodes of a periodic
    `shape` grid of side `length`, from its Fourier series `L^-2 sum_k G_hat(k) e^{i k.theta}`,
    `k in (2 pi / L) Z^2`, truncated to the grid's frequencies (exact to the spectrum's tail).
    """
    k2 = _lattice_k2(shape, length)
    spec = unit.spectrum(jnp.asarray(k2))
    values = jnp.fft.ifft2(spec).real * (shape[0] * shape[1])
    return values / length**2


def _lattice_k2(shape, length):
    m0 = np.fft.fftfreq(shape[0], 1.0 / shape[0])
    m1 = np.fft.fftfreq(shape[1], 1.0 / shape[1])
    k0, k1 = np.meshgrid(2 * np.pi * m0 / length, 2 * np.pi * m1 / length, indexing="ij")
    return k0**2 + k1**2


def lattice_features(
    unit: AbstractUnit, shape: tuple[int, int], length: float, key: PRNGKeyArray, n: int
) -> tuple[Int[Array, "n 2"], Float[Array, " n"], Float[Array, ""]]:
    """Draw `n` random Fourier features of `unit` on the periodic box `[0, length)^2`.

    A feature is `x = (m, beta)`: an integer frequency `m` (the grid's FFT index, wavevector
    `k = 2 pi m / length`) drawn with probability `G_hat(k) / sum G_hat`, and a phase `beta ~
    U[0, 2 pi)`. The unit is `sigma(theta, x) = sqrt(2 G_T(0)) cos(k . theta + beta)`, so
    `E_x[sigma(theta, x) sigma(w, x)] = G_T(theta - w)` exactly (`torus_potential`).

    **Returns:** `(m, beta, amplitude)` with `amplitude = sqrt(2 G_T(0))`; `m` holds indices in
    `[0, shape)` (frequencies above the Nyquist one wrap to negative wavevectors).
    """
    k2 = jnp.asarray(_lattice_k2(shape, length))
    spec = unit.spectrum(k2).reshape(-1)
    g0 = jnp.sum(spec) / length**2
    kf, kb = jax.random.split(key)
    flat = jax.random.choice(kf, spec.size, (n,), p=spec / jnp.sum(spec))
    m = jnp.stack([flat // shape[1], flat % shape[1]], axis=-1)
    beta = jax.random.uniform(kb, (n,), dtype=spec.dtype, maxval=2 * jnp.pi)
    return m, beta, jnp.sqrt(2.0 * g0)


def feature_wavevectors(
    m: Int[Array, "n 2"], shape: tuple[int, int], length: float
) -> Float[Array, "n 2"]:
    """Wavevectors `k = 2 pi m_signed / length` of lattice features (indices wrapped)."""
    size = jnp.asarray(shape)
    signed = jnp.where(m >= (size + 1) // 2, m - size, m)
    return 2.0 * jnp.pi * signed.astype(jnp.result_type(float)) / length


@eqx.filter_jit
def lattice_unit(
    theta: Float[Array, "*batch 2"],
    m: Int[Array, "n 2"],
    beta: Float[Array, " n"],
    amplitude: Float[Array, ""],
    shape: tuple[int, int],
    length: float,
) -> Float[Array, "*batch n"]:
    """`sigma(theta, x_n) = amplitude * cos(k_n . theta + beta_n)` for every feature `n`."""
    k = feature_wavevectors(m, shape, length)
    return amplitude * jnp.cos(theta @ k.T + beta)
