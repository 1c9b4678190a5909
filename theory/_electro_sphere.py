"""Electron dynamics on the unit sphere `S^{d-1}`: units `sigma(theta . x)`, `x ~ N(0, I_d)`.

A student `f(x) = sum_i a_i sigma(theta_i . x)` with `k` units on the sphere learns a teacher
`y(x) = sum_j b_j sigma(w_j . x)`. The population loss is the electrostatic energy

    L(a, theta) = a^T Phi(theta, theta) a - 2 a^T Phi(theta, w) b + b^T Phi(w, w) b,

`Phi(p, q) = E_x[sigma(p . x) sigma(q . x)]`, a function of the angle between `p` and `q` alone
for unit vectors (`_electro_potentials.py` has the closed forms). This module holds

- the three units on the sphere (`SignSphere`, `HermiteSphere(m)`, `ReluSphere`), each with its
  potential written through a half-angle formula whose gradient is finite everywhere (the
  `arccos` form has an infinite derivative at coinciding units);
- `SphereNetwork` (charges and unit positions), `population_loss`, the Riemannian gradient and
  `descend_sphere`: gradient descent on the charges and, on the sphere, on the positions
  (step in the tangent space, then back to the sphere by normalising);
- `sgd_sphere`: the same method driven by minibatch gradients of the sample loss
  `mean (f(x) - y(x))^2` (optax), so that its expectation is the population dynamics;
- `match_teacher`: whether every teacher unit has its own student unit within an angle, up to
  the unit's symmetry (`(a, theta) ~ (-a, -theta)` for odd units, `theta ~ -theta` for even
  ones), and `fit_rates`: linear and power-law fits of a loss curve.

Functions take one network (no batch axis); `vmap` over random starts.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

import mollijax as mj

from ._electro_potentials import hermite_activation, relu_activation, sign_activation

Schedule = Callable[[Int[Array, ""]], Float[Array, ""]]

# --------------------------------------------------------------------------- geometry


def _safe_sqrt(s):
    """`sqrt(s)` for `s >= 0` with gradient 0 (not inf) at `s = 0`."""
    positive = s > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)


def normalise(v: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
    """`v / |v|` along the last axis."""
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def angles_of_cosine(
    cos: Float[Array, "*batch"],
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"], Float[Array, "*batch"]]:
    """`(cos a, sin a, a)` from `cos a` of two unit vectors, through the half angle.

    `|u - v|^2 = 2 - 2 cos a = 4 sin^2(a / 2)` and `|u + v|^2 = 4 cos^2(a / 2)`, so
    `a = 2 atan2(|u - v|, |u + v|)` and `sin a = |u - v| |u + v| / 2`. Unlike `arccos` this
    has a finite gradient at `a = 0` and `a = pi`: zero there, the minimal-norm subgradient of
    the cone `|u - v|` (the sign unit's potential has a kink at `a = 0`). Going through the
    cosine (one matrix product for all pairs) resolves `a` near 0 and `pi` to about
    `sqrt(machine epsilon)`, 1.5e-8 rad in float64: a smooth potential sees that squared, the
    sign unit's kink linearly (its loss near the teacher is resolved to ~1e-8).
    """
    minus = _safe_sqrt(2.0 - 2.0 * cos)
    plus = _safe_sqrt(2.0 + 2.0 * cos)
    return cos, minus * plus / 2.0, 2.0 * jnp.arctan2(minus, plus)


def sphere_angles(
    p: Float[Array, "*batch d"], q: Float[Array, "*batch d"]
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"], Float[Array, "*batch"]]:
    """`(cos a, sin a, a)` of the angle `a` between the directions of `p` and `q`."""
    return angles_of_cosine(jnp.sum(normalise(p) * normalise(q), axis=-1))


# --------------------------------------------------------------------------- units


class AbstractSphereUnit(eqx.Module):
    """A unit `sigma(theta . x)` with `theta` on the sphere and its potential.

    `potential(p, q) = E_x[sigma(p . x) sigma(q . x)]` for unit `p`, `q` (inputs are
    normalised first), a function of the angle alone. `symmetry` says which students are the
    same function: `"odd"` (`sigma(-z) = -sigma(z)`: `(a, theta) ~ (-a, -theta)`), `"even"`
    (`theta ~ -theta`) or `"none"`.
    """

    symmetry: ClassVar[str]

    @abc.abstractmethod
    def activation(self, z: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        """`sigma(z)`."""

    @abc.abstractmethod
    def of_angle(
        self, cos: Float[Array, "*batch"], sin: Float[Array, "*batch"],
        angle: Float[Array, "*batch"],
    ) -> Float[Array, "*batch"]:
        """The potential of two unit vectors at angle `angle` (`cos`, `sin` of it given)."""

    def potential(
        self, p: Float[Array, "*batch d"], q: Float[Array, "*batch d"]
    ) -> Float[Array, "*batch"]:
        """`Phi(p, q)` of the directions of `p` and `q`."""
        return self.of_angle(*sphere_angles(p, q))

    def gram(self, p: Float[Array, "n d"], q: Float[Array, "m d"]) -> Float[Array, "n m"]:
        """`Phi(p_i, q_j)` for all pairs (cosines by one matrix product)."""
        return self.of_angle(*angles_of_cosine(normalise(p) @ normalise(q).T))

    def self_gram(self, p: Float[Array, "n d"]) -> Float[Array, "n n"]:
        """`Phi(p_i, p_j)`, with the diagonal set to `Phi(u, u)` exactly (no gradient: it is
        constant on the sphere; rounding of `u . u` would otherwise leak one in)."""
        eye = jnp.eye(p.shape[0], dtype=bool)
        cos = jnp.where(eye, 0.0, normalise(p) @ normalise(p).T)
        one = jnp.ones((), p.dtype)
        diagonal = self.of_angle(*angles_of_cosine(one))
        return jnp.where(eye, diagonal, self.of_angle(*angles_of_cosine(cos)))


class SignSphere(AbstractSphereUnit):
    """`sigma = sign`: `Phi = 1 - 2 a / pi`. A cone at `a = 0`: the loss is not smooth there."""

    symmetry: ClassVar[str] = "odd"

    def activation(self, z):
        return sign_activation(z)

    def of_angle(self, cos, sin, angle):
        return 1.0 - (2.0 / jnp.pi) * angle


class HermiteSphere(AbstractSphereUnit):
    """`sigma = He_m / sqrt(m!)`: `Phi = cos(a)^m` (Mehler). Smooth."""

    m: int = eqx.field(static=True)

    def __check_init__(self):
        if not (isinstance(self.m, int) and not isinstance(self.m, bool) and self.m >= 1):
            raise mj.MollijaxError(f"HermiteSphere degree `m` must be an int >= 1, got {self.m!r}.")

    @property
    def symmetry(self) -> str:  # type: ignore[override]
        return "odd" if self.m % 2 else "even"

    def activation(self, z):
        return hermite_activation(z, self.m)

    def of_angle(self, cos, sin, angle):
        return cos**self.m


class ReluSphere(AbstractSphereUnit):
    """`sigma = relu`: `Phi = (sin a + (pi - a) cos a) / (2 pi)` (arc-cosine kernel, unit
    vectors). `C^1` in the position, with a bounded second derivative away from `a = pi`."""

    symmetry: ClassVar[str] = "none"

    def activation(self, z):
        return relu_activation(z)

    def of_angle(self, cos, sin, angle):
        return (sin + (jnp.pi - angle) * cos) / (2.0 * jnp.pi)


def sphere_unit(name: str) -> AbstractSphereUnit:
    """`"sign"`, `"relu"` or `"hermiteM"` (`M` the degree, e.g. `"hermite3"`)."""
    if name == "sign":
        return SignSphere()
    if name == "relu":
        return ReluSphere()
    if name.startswith("hermite") and name[7:].isdigit():
        return HermiteSphere(int(name[7:]))
    raise mj.MollijaxError(
        f"Unknown sphere unit {name!r}; expected 'sign', 'relu' or 'hermiteM' (e.g. 'hermite3')."
    )


# --------------------------------------------------------------------------- networks


class SphereNetwork(eqx.Module):
    """A depth-2 network `sum_i charge_i sigma(position_i . x)`: charges `(k,)`, positions
    `(k, d)` on the unit sphere (normalised wherever they are used)."""

    charge: Float[Array, " k"]
    position: Float[Array, "_k d"]  # the count is checked in __check_init__, by name

    def __check_init__(self):
        c, p = jnp.shape(self.charge), jnp.shape(self.position)
        if len(c) != 1 or len(p) != 2 or p[0] != c[0]:
            raise mj.MollijaxError(
                f"SphereNetwork needs `charge` of shape (k,) and `position` of shape (k, d); "
                f"got {c} and {p}."
            )


def network_output(
    net: SphereNetwork, unit: AbstractSphereUnit, x: Float[Array, "n d"]
) -> Float[Array, " n"]:
    """`f(x) = sum_i a_i sigma(theta_i . x)` at the rows of `x`, `theta_i` normalised."""
    return unit.activation(x @ normalise(net.position).T) @ net.charge


def population_loss(
    student: SphereNetwork, unit: AbstractSphereUnit, teacher: SphereNetwork
) -> Float[Array, ""]:
    """`E_x[(f(x) - y(x))^2]`, `x ~ N(0, I_d)`, exactly, from the potential (the energy above)."""
    a, b = student.charge, teacher.charge
    theta, w = student.position, teacher.position
    return (a @ unit.self_gram(theta) @ a - 2.0 * a @ unit.gram(theta, w) @ b
            + b @ unit.self_gram(w) @ b)


def sphere_gradient(
    student: SphereNetwork, unit: AbstractSphereUnit, teacher: SphereNetwork
) -> tuple[Float[Array, ""], SphereNetwork]:
    """The loss and its Riemannian gradient: `dL/da`, and `dL/dtheta_i` projected onto the
    tangent space `{v : v . theta_i = 0}` of the sphere at `theta_i` (unit `theta_i`)."""
    loss, g = jax.value_and_grad(population_loss)(student, unit, teacher)
    theta = normalise(student.position)
    tangent = g.position - jnp.sum(g.position * theta, -1, keepdims=True) * theta
    return loss, SphereNetwork(g.charge, tangent)


def _as_schedule(lr: float | Schedule) -> Schedule:
    return lr if callable(lr) else (lambda step: jnp.asarray(lr))


def _masked(g: SphereNetwork, active) -> SphereNetwork:
    return SphereNetwork(jnp.where(active, g.charge, 0.0),
                         jnp.where(active[:, None], g.position, 0.0))


def _retract(net: SphereNetwork, step: SphereNetwork) -> SphereNetwork:
    """`a - da`, and `theta - dtheta` normalised back onto the sphere."""
    return SphereNetwork(net.charge - step.charge, normalise(net.position - step.position))


def _recorded_scan(step, carry, steps: int, every: int, loss_of):
    """`steps` calls of `step(carry, t)` (`t` the step index) in chunks of `every`, with
    `loss_of(carry)` recorded at the start and after every chunk."""

    def chunk(c, r):
        c, _ = jax.lax.scan(step, c, r * every + jnp.arange(every))
        return c, loss_of(c)

    final, losses = jax.lax.scan(chunk, carry, jnp.arange(steps // every))
    return final, jnp.concatenate([loss_of(carry)[None], losses])


@eqx.filter_jit
def descend_sphere(
    student: SphereNetwork,
    unit: AbstractSphereUnit,
    teacher: SphereNetwork,
    lr_position: float | Schedule,
    lr_charge: float | Schedule,
    steps: int,
    every: int = 1,
    active: Bool[Array, " k"] | None = None,
) -> tuple[SphereNetwork, Float[Array, " records"]]:
    """Riemannian gradient descent of the population loss, `steps` steps:

        a <- a - eta_a(t) dL/da,    theta_i <- normalise(theta_i - eta_theta(t) grad_i L),

    `grad_i L` the tangential gradient (`sphere_gradient`). A learning rate is a float or a
    schedule `t -> eta(t)` (e.g. an optax schedule). Only units with `active[i]` (all by
    default) move; start the others at charge 0 and they are absent, which lets students of
    different widths share one compiled function (pad the teacher with charges 0 too).

    **Returns:** `(final, losses)`, `losses[r]` the loss after `r * every` steps,
    `r = 0 .. steps // every` (the start first).
    """
    if steps % every:
        raise mj.MollijaxError(f"`steps` ({steps}) must be a multiple of `every` ({every}).")
    eta_theta, eta_a = _as_schedule(lr_position), _as_schedule(lr_charge)
    student = SphereNetwork(student.charge, normalise(student.position))
    on = jnp.ones(student.charge.shape, bool) if active is None else active

    def step(state, t):
        _, g = sphere_gradient(state, unit, teacher)
        g = _masked(g, on)
        return _retract(state, SphereNetwork(eta_a(t) * g.charge, eta_theta(t) * g.position)), None

    return _recorded_scan(step, student, steps, every,
                          lambda state: population_loss(state, unit, teacher))


class _CountState(eqx.Module):
    count: Int[Array, ""]


def sphere_sgd(
    lr_position: float | Schedule, lr_charge: float | Schedule
) -> optax.GradientTransformation:
    """Plain SGD on a `SphereNetwork` with separate rates for positions and charges (floats or
    schedules of the step), as an optax transformation: `update = -(eta_a(t) g_a,
    eta_theta(t) g_theta)`, the step `descend_sphere` takes with the population gradient."""
    eta_theta, eta_a = _as_schedule(lr_position), _as_schedule(lr_charge)

    def init(params):
        return _CountState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        t = state.count
        new = SphereNetwork(-eta_a(t) * updates.charge, -eta_theta(t) * updates.position)
        return new, _CountState(t + 1)

    return optax.GradientTransformation(init, update)


def sample_loss(
    student: SphereNetwork, unit: AbstractSphereUnit, teacher: SphereNetwork,
    x: Float[Array, "n d"],
) -> Float[Array, ""]:
    """`mean_n (f(x_n) - y(x_n))^2`, an unbiased estimate of `population_loss`."""
    return jnp.mean((network_output(student, unit, x) - network_output(teacher, unit, x)) ** 2)


@eqx.filter_jit
def sgd_sphere(
    student: SphereNetwork,
    unit: AbstractSphereUnit,
    teacher: SphereNetwork,
    key: PRNGKeyArray,
    optimiser: optax.GradientTransformation,
    steps: int,
    batch: int,
    every: int = 1,
    active: Bool[Array, " k"] | None = None,
) -> tuple[SphereNetwork, Float[Array, " records"]]:
    """End-to-end training on samples: at every step draw `batch` inputs `x ~ N(0, I_d)`,
    label them with the teacher, and apply `optimiser` (e.g. `optax.sgd(lr)`) to the
    gradient of `sample_loss`; positions are normalised back onto the sphere after each step.
    The student's output normalises its positions, so the sample gradient in `theta_i` is
    already tangential, and with `optax.sgd` one step is an unbiased estimate of a
    `descend_sphere` step with the same rates. `active` as in `descend_sphere`.

    **Returns:** `(final, losses)`, `losses[r]` the *population* loss (exact, from the
    potential) after `r * every` steps, the start first.
    """
    if steps % every:
        raise mj.MollijaxError(f"`steps` ({steps}) must be a multiple of `every` ({every}).")
    d = student.position.shape[-1]
    student = SphereNetwork(student.charge, normalise(student.position))
    on = jnp.ones(student.charge.shape, bool) if active is None else active
    grad = jax.grad(sample_loss)

    def step(carry, t):
        state, opt_state = carry
        x = jax.random.normal(jax.random.fold_in(key, t), (batch, d), dtype=state.charge.dtype)
        g = _masked(grad(state, unit, teacher, x), on)
        updates, opt_state = optimiser.update(g, opt_state, state)
        state = optax.apply_updates(state, updates)
        return (SphereNetwork(state.charge, normalise(state.position)), opt_state), None

    (final, _), losses = _recorded_scan(step, (student, optimiser.init(student)), steps, every,
                                        lambda carry: population_loss(carry[0], unit, teacher))
    return final, losses


# --------------------------------------------------------------------------- starts, matching


def random_directions(key: PRNGKeyArray, k: int, d: int, dtype=None) -> Float[Array, "k d"]:
    """`k` independent directions, uniform on `S^{d-1}`."""
    return normalise(jax.random.normal(key, (k, d), dtype=dtype or jnp.result_type(float)))


def orthonormal_directions(key: PRNGKeyArray, k: int, d: int, dtype=None) -> Float[Array, "k d"]:
    """`k <= d` orthonormal directions, uniformly rotated (QR of a Gaussian matrix)."""
    if k > d:
        raise mj.MollijaxError(f"orthonormal_directions needs k <= d, got k={k}, d={d}.")
    g = jax.random.normal(key, (d, k), dtype=dtype or jnp.result_type(float))
    q, r = jnp.linalg.qr(g)
    return (q * jnp.sign(jnp.diagonal(r))).T


def match_teacher(
    student: SphereNetwork,
    unit: AbstractSphereUnit,
    teacher: SphereNetwork,
    tol: float,
    active: Bool[Array, " k"] | None = None,
) -> tuple[Bool[Array, ""], Float[Array, " k"]]:
    """Whether every teacher unit `j` has its own student unit within angle `tol` (radians).

    The angle of student `i` to teacher `j` is taken up to the unit's symmetry: for `"odd"`
    and `"even"` units `theta_i` and `-theta_i` are the same direction (`min(a, pi - a)`).
    Each teacher takes its nearest student; the match holds when those are all distinct and
    all within `tol`. With `active` (padded networks of the same width, as in
    `descend_sphere`) only active students and teachers take part.

    **Returns:** `(matched, angles)`, `angles[j]` the angle of teacher `j` to its nearest
    student (`0` for an inactive teacher).
    """
    on = jnp.ones(student.charge.shape, bool) if active is None else active
    _, _, a = sphere_angles(*jnp.broadcast_arrays(student.position[:, None, :],
                                                   teacher.position[None, :, :]))
    if unit.symmetry != "none":
        a = jnp.minimum(a, jnp.pi - a)
    a = jnp.where(on[:, None], a, 2 * jnp.pi)  # inactive students are never nearest
    nearest = jnp.where(on, jnp.argmin(a, axis=0), -1 - jnp.arange(on.size))  # distinct
    angles = jnp.where(on, jnp.min(a, axis=0), 0.0)
    order = jnp.sort(nearest)
    distinct = jnp.all(order[1:] != order[:-1])
    return distinct & jnp.all(angles < tol), angles


# --------------------------------------------------------------------------- rates


def fit_rates(
    steps: np.ndarray, losses: np.ndarray, low: float, high: float
) -> dict[str, float]:
    """Fit a loss curve where `low <= loss <= high`, two ways:

    - linear convergence `log L = c + t log rho`: the rate `rho` per step (< 1), with the
      residual standard deviation of `log L`;
    - sublinear `log L = c - p log t`: the exponent `p`, with its residual.

    **Returns:** `{"rho", "rho_resid", "power", "power_resid", "points"}` (NaN with fewer than
    3 points in the window).
    """
    steps, losses = np.asarray(steps, float), np.asarray(losses, float)
    keep = (losses >= low) & (losses <= high) & (steps > 0) & np.isfinite(losses)
    if keep.sum() < 3:
        nan = float("nan")
        return {"rho": nan, "rho_resid": nan, "power": nan, "power_resid": nan,
                "points": int(keep.sum())}
    t, y = steps[keep], np.log(losses[keep])
    lin = np.polyfit(t, y, 1)
    pw = np.polyfit(np.log(t), y, 1)
    return {
        "rho": float(math.exp(lin[0])),
        "rho_resid": float(np.std(y - np.polyval(lin, t))),
        "power": float(-pw[0]),
        "power_resid": float(np.std(y - np.polyval(pw, np.log(t)))),
        "points": int(keep.sum()),
    }
