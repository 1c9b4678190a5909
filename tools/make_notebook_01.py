"""Writes notebooks/01_quickstart.ipynb (run from the repository root, then execute it)."""

# ruff: noqa: E501  (the cell texts are the notebook's, kept line for line)

import nbformat as nbf

cells = [
    ("md", """# 01 · Quickstart: derivatives of a noisy image

mollijax differentiates fields sampled on a grid by convolving them with analytic derivatives of a
smooth, compact kernel (a *mollifier*): $D^\\alpha(u * \\varphi_\\varepsilon) = u * D^\\alpha\\varphi_\\varepsilon$.
One convolution per derivative, any order, and noise is smoothed on the way.

This notebook takes derivatives of a noisy synthetic image, compares them with finite differences,
and shows how the kernel width `eps` trades bias against noise. Set `MOLLIJAX_SMALL=1` to run it on
smaller grids."""),
    ("code", """import os
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import matplotlib.pyplot as plt
import mollijax as mj

SMALL = os.environ.get("MOLLIJAX_SMALL") == "1"
n = 64 if SMALL else 256"""),
    ("md", """## A noisy image with known derivatives

$u(x, y) = \\sin(2\\pi x)\\cos(2\\pi y) + 0.5\\,e^{-((x-0.6)^2 + (y-0.4)^2)/0.02}$ on the unit square,
with 5 % Gaussian noise (relative to the standard deviation of the image)."""),
    ("code", """grid = mj.Grid.from_bounds((n, n), (0.0, 0.0), (1.0, 1.0), axes=("x", "y"))
x, y = grid.mesh()
w = 2 * np.pi
g = 0.5 * np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.02)
u = np.sin(w * x) * np.cos(w * y) + g
# exact Laplacian
lap_exact = -2 * w**2 * np.sin(w * x) * np.cos(w * y) + g * (
    ((2 * (x - 0.6) / 0.02) ** 2 - 2 / 0.02) + ((2 * (y - 0.4) / 0.02) ** 2 - 2 / 0.02)
)
rng = np.random.default_rng(0)
noisy = u + 0.05 * u.std() * rng.standard_normal(u.shape)
print("estimated relative noise:", round(mj.estimate_noise(noisy), 4))"""),
    ("md", """## Mollified Laplacian vs finite differences

`suggest_eps` picks a width from the grid, the derivative order and the noise level
(see `docs/design.md`)."""),
    ("code", """eps = mj.suggest_eps(grid, order=2, noise=mj.estimate_noise(noisy))
D = mj.Mollifier(grid, eps, kernel=mj.Bump(), boundary="odd")
FD = mj.FiniteDifference(grid)
lap_m = np.asarray(D.laplacian(noisy))
lap_fd = np.asarray(FD.laplacian(noisy))
inner = (slice(n // 8, -n // 8),) * 2
rel = lambda a: np.linalg.norm((a - lap_exact)[inner]) / np.linalg.norm(lap_exact[inner])
print(f"eps = {eps:.4f}  mollified error {rel(lap_m):.3f}   finite differences {rel(lap_fd):.3f}")
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
for ax, img, title in zip(axes, [noisy, lap_exact, lap_fd, lap_m],
                          ["noisy image", "exact Laplacian", "finite differences", "mollified"]):
    im = ax.imshow(img.T, origin="lower", extent=(0, 1, 0, 1),
                   vmin=None if title == "noisy image" else lap_exact.min(),
                   vmax=None if title == "noisy image" else lap_exact.max())
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
plt.tight_layout()"""),
    ("md", """## Bias against noise: the width `eps`

A narrow kernel is unbiased but amplifies noise; a wide one smooths noise but blurs the field
(error $O(\\varepsilon^2)$). The rule in `suggest_eps` aims near the minimum."""),
    ("code", """widths = np.linspace(3, min(40, n // 5), 14) * grid.spacing[0]
errs_noisy, errs_clean = [], []
for e in widths:
    d = mj.Mollifier(grid, float(e))
    errs_noisy.append(rel(np.asarray(d.laplacian(noisy))))
    errs_clean.append(rel(np.asarray(d.laplacian(u))))
plt.figure(figsize=(5, 3.5))
plt.semilogy(widths, errs_noisy, "o-", label="5 % noise")
plt.semilogy(widths, errs_clean, "s-", label="clean")
plt.axvline(eps, color="k", ls="--", label="suggest_eps")
plt.xlabel("eps"); plt.ylabel("relative L2 error of the Laplacian"); plt.legend()"""),
    ("md", """## Many derivatives in one call, any order, under `jit`, `vmap` and `grad`

`derivatives` shares work between the requested multi-indices; the operators are pure functions of
the values, so they compose with JAX transformations."""),
    ("code", """u_x, u_xy, u_xxyy = D.derivatives(noisy, ["x", "xy", "xxyy"])
f = jax.jit(lambda v: D.laplacian(v))
batch = jax.vmap(f)(np.stack([noisy, u]))
g = jax.grad(lambda v: (D(v, "xx") ** 2).mean())(noisy)
print(u_x.shape, u_xxyy.shape, batch.shape, g.shape)"""),
    ("md", """## Kernels and boundaries

Three kernel families (`Bump`, `Polynomial`, `TruncatedGaussian`) and boundary modes
(`periodic`, `even`, `odd`, `linear`, `zero`, `valid`). Near a boundary every padding mode is an
assumption about the field outside the grid; `valid` returns only the interior where the kernel
fits."""),
    ("code", """for kernel in [mj.Bump(), mj.Polynomial(6), mj.TruncatedGaussian()]:
    d = mj.Mollifier(grid, eps, kernel=kernel)
    print(f"{type(kernel).__name__:18s} Laplacian error {rel(np.asarray(d.laplacian(noisy))):.3f}")
valid = mj.Mollifier(grid, eps, boundary="valid")
print("valid-mode output shape:", valid(noisy, "xx").shape, "region:", valid.valid_region())"""),
]

nb = nbf.v4.new_notebook()
nb["cells"] = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
               for kind, src in cells]
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/01_quickstart.ipynb")
