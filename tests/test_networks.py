"""The shipped coordinate networks: shapes, differentiability, that they can learn, and the
architecture facts of PirateNet (alpha = 0 start, random weight factorisation, least-squares
start) and PINNsFormer (pseudo-sequence, attention across it, wavelets, sequential loss)."""

import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mollijax as mj
from mollijax.cli import prepare
from mollijax.config import ConfigError, from_dict

# small sizes: the architecture is what is tested, and compiles dominate the time
NETWORKS = {
    "MLP": lambda n, key: mj.MLP(n, key=key),
    "FourierMLP": lambda n, key: mj.FourierMLP(n, key=key),
    "PirateNet": lambda n, key: mj.PirateNet(n, features=16, width=32, key=key),
    "PINNsFormer": lambda n, key: mj.PINNsFormer(n, d_model=16, heads=2, width=32, seq_len=3,
                                                 key=key),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_scalar_output_and_smooth_derivatives(name):
    net = NETWORKS[name](2, jax.random.PRNGKey(0))
    x = jnp.array([0.3, -0.2])
    assert net(x).shape == ()
    # jitted: one compile of the whole Hessian instead of one per operation run eagerly (the
    # transformer's took 7.3 s of CPU eagerly, 1.5 s jitted)
    hess = jax.jit(jax.hessian(net))(x)
    assert hess.shape == (2, 2) and np.all(np.isfinite(hess))
    np.testing.assert_allclose(hess, hess.T, rtol=1e-10, atol=1e-12)
    # vmap over points is the loop over points
    pts = jnp.array([[0.3, -0.2], [-0.7, 0.9], [0.0, 0.1]])
    np.testing.assert_allclose(jax.vmap(net)(pts), [net(p) for p in pts], rtol=1e-12)


# ----------------------------------------------------------------------------- PirateNet


@pytest.fixture(scope="module")
def pirate():  # the sizes of NETWORKS: their compiled initialisers are reused
    return NETWORKS["PirateNet"](2, jax.random.PRNGKey(3))


def _dense_layers(net):
    return [net.gate_u, net.gate_v, net.head] + [
        d for b in net.blocks for d in (b.dense1, b.dense2, b.dense3)
    ]


def test_pirate_starts_linear_in_its_embedding_and_pirate_init_fits_it(pirate):
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(4), 3)
    pts = jax.random.uniform(key1, (60, 2), minval=-1.0, maxval=1.0)
    fresh = jax.random.uniform(key2, (20, 2), minval=-1.0, maxval=1.0)
    coef = jax.random.normal(key3, (32,))

    def target(p):  # a field the embedding spans, with an offset
        return pirate.embedding(p) @ coef - 0.4

    assert [float(b.alpha) for b in pirate.blocks] == [0.0, 0.0]
    fitted = mj.pirate_init(pirate, pts, jax.vmap(target)(pts))
    # exactly linear in Phi(x): the least-squares start reproduces the target to round-off,
    # also away from the points it was fitted on (the blocks are the identity at alpha = 0)
    np.testing.assert_allclose(jax.vmap(fitted)(pts), jax.vmap(target)(pts), atol=1e-11)
    np.testing.assert_allclose(jax.vmap(fitted)(fresh), jax.vmap(target)(fresh), atol=1e-11)
    # only the output layer changed, and its factorisation kept its scales
    assert eqx.tree_equal(eqx.tree_at(lambda n: n.head, fitted, pirate.head), pirate)
    np.testing.assert_array_equal(fitted.head.log_scale, pirate.head.log_scale)
    # with alpha != 0 the network is no longer linear in Phi: refused
    deep = eqx.tree_at(lambda n: n.blocks[1].alpha, pirate, jnp.asarray(0.3))
    with pytest.raises(mj.MollijaxError, match="block 1 has alpha = 0.3"):
        mj.pirate_init(deep, pts, jax.vmap(target)(pts))
    # and then the blocks do act: the same output layer no longer reproduces the target
    deep = eqx.tree_at(lambda n: n.blocks[1].alpha, fitted, jnp.asarray(0.3))
    assert np.max(np.abs(jax.vmap(deep)(fresh) - jax.vmap(target)(fresh))) > 1e-3


def test_pirate_random_weight_factorisation(pirate):
    x = jnp.array([0.2, -0.5])
    layers = _dense_layers(pirate)
    for layer in layers:  # W = diag(exp(s)) V, and the layer applies W
        np.testing.assert_allclose(layer.weight,
                                   np.exp(layer.log_scale)[:, None] * layer.direction)
    z = pirate.embedding(x)
    np.testing.assert_allclose(pirate.gate_u(z), pirate.gate_u.weight @ z + pirate.gate_u.bias)
    # s ~ N(1, 0.1^2) at the start: all scales together (9 layers, 257 of them)
    s = np.concatenate([np.asarray(layer.log_scale) for layer in layers])
    assert abs(s.mean() - 1.0) < 0.05 and 0.06 < s.std() < 0.14, (s.mean(), s.std())

    def grads(net):
        g = jax.jit(jax.grad(lambda n: n(x)))(net)
        return [(float(jnp.abs(d.log_scale).max()), float(jnp.abs(d.direction).max()))
                for d in _dense_layers(g)], [float(b.alpha) for b in g.blocks]

    # at alpha = 0 only the output layer and the alphas are reached
    layer_grads, alpha_grads = grads(pirate)
    assert min(layer_grads[2]) > 0 and all(a != 0 for a in alpha_grads)
    assert all(v == 0 for i, pair in enumerate(layer_grads) if i != 2 for v in pair)
    # once the alphas move, every layer's s and V receive gradients
    deep = eqx.tree_at(lambda n: [b.alpha for b in n.blocks], pirate,
                       [jnp.asarray(0.5), jnp.asarray(0.5)])
    layer_grads, _ = grads(deep)
    assert all(v > 0 for pair in layer_grads for v in pair), layer_grads


# --------------------------------------------------------------------------- PINNsFormer


@pytest.fixture(scope="module")
def former():
    return mj.PINNsFormer(2, d_model=16, heads=2, width=32, seq_len=3, delta=0.05,
                          key=jax.random.PRNGKey(5))


def _wavelets(net):
    leaves = jax.tree_util.tree_leaves(net, is_leaf=lambda n: type(n).__name__ == "_Wavelet")
    return [w for w in leaves if type(w).__name__ == "_Wavelet"]


def test_pinnsformer_pseudo_sequence_and_attention(former):
    x = jnp.array([0.3, -0.2])
    tokens = former.pseudo_sequence(x)
    np.testing.assert_allclose(tokens, [[0.3, -0.2], [0.3, -0.15], [0.3, -0.1]])
    seq = eqx.filter_jit(former.sequence)(x)
    assert seq.shape == (3,)
    np.testing.assert_allclose(former(x), seq[0], rtol=1e-12)
    np.testing.assert_allclose(eqx.filter_jit(former.on_sequence)(tokens), seq, rtol=1e-12)
    # attention mixes the pseudo-sequence: moving the last token changes the first value
    moved = eqx.filter_jit(former.on_sequence)(tokens.at[2].add(jnp.array([0.5, 0.3])))
    assert abs(float(moved[0] - seq[0])) > 1e-6
    # time is the last coordinate by default; `time` picks another
    other = mj.PINNsFormer(2, d_model=16, heads=2, width=32, seq_len=3, delta=0.1, time=0,
                           key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(other.pseudo_sequence(x), [[0.3, -0.2], [0.4, -0.2], [0.5, -0.2]])
    with pytest.raises(mj.MollijaxError, match="`heads` \\(3\\) must divide `d_model` \\(16\\)"):
        mj.PINNsFormer(2, d_model=16, heads=3, key=jax.random.PRNGKey(0))


def test_pinnsformer_wavelets_are_trained(former):
    # encoder and decoder: two per layer and one final each; feed-forward two per layer;
    # output MLP two
    wavelets = _wavelets(former)
    assert len(wavelets) == 2 * 2 + 2 + 2 * 2 + 2 and all(
        float(w.w1) == 1.0 and float(w.w2) == 1.0 for w in wavelets)
    pts = jnp.array([[0.3, -0.2], [-0.5, 0.4], [0.9, 0.0]])

    def loss(net):
        return jnp.mean((jax.vmap(net)(pts) - jnp.array([1.0, -1.0, 0.5])) ** 2)

    params, static = eqx.partition(former, eqx.is_array)

    @jax.jit
    def step(params):  # plain gradient descent
        g = jax.grad(lambda p: loss(eqx.combine(p, static)))(params)
        return jax.tree.map(lambda p, d: p - 0.05 * d, params, g), g

    params, g = step(params)
    for w in _wavelets(eqx.combine(g, static)):
        assert float(w.w1) != 0.0 and float(w.w2) != 0.0
    for _ in range(4):
        params, _ = step(params)
    trained = eqx.combine(params, static)
    assert all(float(w.w1) != 1.0 and float(w.w2) != 1.0 for w in _wavelets(trained))
    assert loss(trained) < loss(former)


def _wave_residual(s):
    """u_t + c u_x, c a constant: independent of time."""
    return s.d(s.u, "t") + s.c * s.d(s.u, "x")


def test_sequential_residual_is_the_residual_at_each_pseudo_time():
    grid = mj.Grid.from_bounds((14, 11), (0.0, 0.0), (1.0, 0.5), axes=("x", "t"))
    x, t = grid.mesh()
    data = np.sin(2 * np.pi * (x - 0.8 * t))
    derivatives = mj.FiniteDifference(grid)
    net = mj.PINNsFormer(2, d_model=16, heads=2, width=32, seq_len=3, delta=0.1,
                         key=jax.random.PRNGKey(2))
    unknowns = {"u": mj.NetworkField(net, ("x", "t")), "c": mj.Constant(0.7)}
    term = mj.SequentialResidual(_wave_residual, "u")
    problem = mj.Problem(grid, _wave_residual, data={"u": data}, derivatives=derivatives,
                         terms=[term])
    terms = eqx.filter_jit(lambda p, u: p.loss_terms(u))(problem, unknowns)
    assert term.name == "residual:pde:seq" and set(terms) == {
        "data:u", "residual:pde", "residual:pde:seq"}
    # by hand: u_j on the grid (the network's inputs scaled to [-1, 1]), its residual as data
    xi = np.stack([2 * x.ravel() - 1, 4 * t.ravel() - 1], axis=-1)
    seq = jax.vmap(net.sequence)(jnp.asarray(xi)).reshape(*grid.shape, 3)
    plain = mj.Problem(grid, _wave_residual, data={"u": data}, derivatives=derivatives)
    residual = eqx.filter_jit(
        lambda p: p.loss_terms({"c": mj.Constant(0.7)})["residual:pde"])
    by_hand = [residual(plain.with_data({"u": seq[..., j]})) for j in range(3)]
    np.testing.assert_allclose(terms["residual:pde"], by_hand[0], rtol=1e-10)
    np.testing.assert_allclose(terms["residual:pde:seq"], by_hand[1] + by_hand[2], rtol=1e-10)
    # the data term sees j = 0 only
    np.testing.assert_allclose(terms["data:u"], np.mean((np.asarray(seq[..., 0]) - data) ** 2),
                               rtol=1e-10)
    # a coefficient that depends on time would be read at the wrong pseudo-time: refused
    timed = {**unknowns, "c": mj.GridField(np.full(11, 0.7), "t")}
    with pytest.raises(mj.MollijaxError, match="unknown 'c' depends on 't'"):
        problem.loss_terms(timed)
    wrong = {**unknowns, "u": mj.NetworkField(mj.MLP(2, key=jax.random.PRNGKey(0)), ("x", "t"))}
    with pytest.raises(mj.MollijaxError, match="over a PINNsFormer, got NetworkField over MLP"):
        problem.loss_terms(wrong)


# ------------------------------------------------------------------------- from a config

SMALL_OPTIONS = {  # the sizes of NETWORKS
    "mlp": {},
    "fourier": {},
    "pirate": {"features": 16, "width": 32},
    "pinnsformer": {"d_model": 16, "heads": 2, "width": 32, "seq_len": 3, "sequential": True},
}


def test_every_network_name_is_a_network_class():
    assert set(mj.names("network")) == {"mlp", "fourier", "pirate", "pinnsformer",
                                        "transformer"}
    net = mj.from_name("network", "transformer", 1, key=jax.random.PRNGKey(0), **{
        k: v for k, v in SMALL_OPTIONS["pinnsformer"].items() if k != "sequential"})
    assert type(net) is mj.PINNsFormer
    assert mj.TransformerPINN is mj.PINNsFormer


DECAY = textwrap.dedent('''
    """u_t = -c u on [0, 1]: recover the rate c (a constant) from u(t)."""

    import numpy as np

    import mollijax as mj

    DESCRIPTION = "u_t = -c u: recover the constant rate c from u"
    ORDER = 1
    DEFAULTS = {"nt": 17}
    UNKNOWNS = {"c": {"axes": (), "constraint": "positive", "init": 1.0}}
    STATE = ("u",)


    def simulate(*, noise=0.0, seed=0, nt=17):
        grid = mj.Grid.from_bounds((nt,), (0.0,), (1.0,), axes=("t",))
        return mj.Dataset(grid, {"u": np.exp(-2.0 * grid.coords("t"))},
                          truth={"c": np.asarray(2.0)})


    def residual(s):
        return s.d(s.u, "t") + s.c * s.u


    residuals = {"pde": residual}
''')


@pytest.fixture(scope="module")
def decay_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("decay") / "decay.py"
    path.write_text(DECAY)
    return str(path)


@pytest.mark.parametrize("name", SMALL_OPTIONS)
def test_networks_learn_from_a_config(name, decay_file):
    # each network name as the state of a configuration, fitted (data and residual); c is a
    # constant, so PINNsFormer's sequential loss applies
    config = from_dict({
        "problem": {"file": decay_file},
        "state": {"representation": name, **SMALL_OPTIONS[name]},
    })
    prepared = prepare(config)
    state = prepared.unknowns["u"]
    data = np.asarray(prepared.dataset.data["u"])
    if name == "pinnsformer":
        assert state.net.seq_len == 3 and state.net.time == 0  # along the axis "t"
    result = mj.fit(prepared.problem, prepared.unknowns, optax.adam(1e-2), steps=150,
                    chunk=150, progress=False)
    history = result.history
    assert ("residual:pde:seq" in history) == (name == "pinnsformer")
    first, last = history["total"][0], history["total"][-1]
    if name == "pirate":  # the least-squares start already fits the data closely
        assert history["data:u"][0] < 1e-4 * np.mean(data**2), history["data:u"][0]
        assert last < first
    else:
        assert last < 0.05 * first, (first, last)


def test_network_option_keys_in_a_config(decay_file):
    state = {"representation": "pinnsformer", "d_model": 8, "heads": 4, "seq_len": 2,
             "delta": 0.2, "sequential": True}
    cfg = from_dict({"problem": {"file": decay_file}, "state": state})
    assert (cfg.state.d_model, cfg.state.heads, cfg.state.seq_len, cfg.state.delta) == (
        8, 4, 2, 0.2)
    for bad, match in [
        ({"representation": "mlp", "sequential": True}, "'sequential' applies to a PINNsFormer"),
        ({"representation": "data", "heads": 2}, "key 'heads' is a network option"),
        ({"representation": "pinnsformer", "seq_len": 0}, "'seq_len' must be an integer >= 1"),
    ]:
        with pytest.raises(ConfigError, match=match):
            from_dict({"problem": {"file": decay_file}, "state": bad})
    cfg = from_dict({"problem": {"file": decay_file},
                     "state": {"representation": "pinnsformer", "d_model": 8, "heads": 3}})
    with pytest.raises(mj.MollijaxError, match=r"\[state\]: PINNsFormer: `heads` \(3\)"):
        prepare(cfg)
