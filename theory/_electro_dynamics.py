"""Electrostatic energy of a student network and its gradient descent (electron dynamics).

Electrons are the student's units `(a_i, theta_i)`, protons the teacher's `(b_j, w_j)`; with a
translation-invariant unit `Phi(theta, w) = G(theta - w)` the squared loss is

    L(a, theta) = sum_{i,i'} a_i a_i' G(theta_i - theta_i') - 2 sum_{i,j} a_i b_j G(theta_i - w_j)
                  + sum_{j,j'} b_j b_j' G(w_j - w_j').

Gradient descent on `(a, theta)` moves electrons along the force from the protons
(attraction) and the other electrons (repulsion) while their charges relax.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

import mollijax as mj

from ._electro_potentials import AbstractUnit


class Charges(eqx.Module):
    """A set of `n` point charges in the plane: charges `(n,)`, positions `(n, 2)`."""

    charge: Float[Array, " n"]
    position: Float[Array, "_n 2"]  # the count is checked in __check_init__, by name

    def __check_init__(self):
        c, p = jnp.shape(self.charge), jnp.shape(self.position)
        if len(c) != 1 or len(p) != 2 or p != (c[0], 2):
            raise mj.MollijaxError(
                f"Charges need `charge` of shape (n,) and `position` of shape (n, 2); got "
                f"{c} and {p}."
            )


def _gram(unit: AbstractUnit, p: Float[Array, "n 2"], q: Float[Array, "m 2"]):
    return unit.potential(p[:, None, :] - q[None, :, :])


@eqx.filter_jit
def energy(student: Charges, unit: AbstractUnit, teacher: Charges) -> Float[Array, ""]:
    """The squared loss `E_x[(f - y)^2]` written as the electrostatic energy above (>= 0)."""
    a, b = student.charge, teacher.charge
    self_e = a @ _gram(unit, student.position, student.position) @ a
    cross = a @ _gram(unit, student.position, teacher.position) @ b
    const = b @ _gram(unit, teacher.position, teacher.position) @ b
    return self_e - 2.0 * cross + const


@eqx.filter_jit
def felt_potential(
    theta: Float[Array, "*batch 2"], student: Charges, unit: AbstractUnit, teacher: Charges
) -> Float[Array, "*batch"]:
    """`P(theta) = sum_i a_i G(theta - theta_i) - sum_j b_j G(theta - w_j)`.

    A new electron of charge `a` at `theta` changes the loss by `a^2 G(0) + 2 a P(theta)`; its
    best charge is `-P / G(0)` and the best decrease `-P(theta)^2 / G(0)`.
    """
    pe = unit.potential(theta[..., None, :] - student.position) @ student.charge
    pp = unit.potential(theta[..., None, :] - teacher.position) @ teacher.charge
    return pe - pp


@eqx.filter_jit
def position_laplacians(
    student: Charges, unit: AbstractUnit, teacher: Charges
) -> Float[Array, " n"]:
    """`Laplacian_{theta_i} L` for every electron `i` (trace of its 2x2 Hessian block), autodiff."""
    def loss_of_positions(pos):
        return energy(Charges(student.charge, pos), unit, teacher)

    hess = jax.hessian(loss_of_positions)(student.position)  # (n, 2, n, 2)
    n = student.charge.shape[0]
    idx = jnp.arange(n)
    return hess[idx, 0, idx, 0] + hess[idx, 1, idx, 1]


@eqx.filter_jit
def descend(
    student: Charges,
    unit: AbstractUnit,
    teacher: Charges,
    lr: float,
    steps: int,
    active: Bool[Array, " n"] | None = None,
) -> tuple[Charges, Charges]:
    """`steps` of plain gradient descent `(a, theta) <- (a, theta) - lr * grad L`.

    Only electrons with `active[i]` move (all by default); the others stay frozen, which is
    how node-wise learning trains one unit at a time.

    **Returns:** `(final, trajectory)`, the trajectory a `Charges` with a leading time axis
    of length `steps + 1` (the initial state first).
    """
    if active is None:
        active = jnp.ones(student.charge.shape, dtype=bool)
    grad = jax.grad(energy)

    def step(state, _):
        g = grad(state, unit, teacher)
        new = Charges(
            state.charge - lr * jnp.where(active, g.charge, 0.0),
            state.position - lr * jnp.where(active[:, None], g.position, 0.0),
        )
        return new, new

    final, path = jax.lax.scan(step, student, None, length=steps)
    path = jax.tree_util.tree_map(lambda x0, xs: jnp.concatenate([x0[None], xs]), student, path)
    return final, path


def descend_nodewise(
    init: Charges, unit: AbstractUnit, teacher: Charges, lr: float, steps: int
) -> tuple[Charges, list[Charges]]:
    """Node-wise learning: electron `i` is added (with its initial charge and position) and
    trained alone for `steps` while electrons `0..i-1` stay frozen; later ones are absent
    (charge 0) until their turn.

    **Returns:** `(final, paths)`, one trajectory per stage.
    """
    n = init.charge.shape[0]
    state = Charges(jnp.zeros_like(init.charge), init.position)
    paths = []
    for i in range(n):
        state = Charges(state.charge.at[i].set(init.charge[i]), state.position)
        active = jnp.arange(n) == i
        state, path = descend(state, unit, teacher, lr, steps, active)
        paths.append(path)
    return state, paths
