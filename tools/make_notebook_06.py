"""Writes notebooks/06_bring_your_own_data.ipynb (run from the repository root, then execute it)."""

# ruff: noqa: E501  (the cell texts are the notebook's, kept line for line)

import nbformat as nbf

cells = [
    ("md", """# 06 · Bring your own data: a TIFF stack through a configuration file

A microscope gives you a multi-page TIFF: one image per frame, in camera counts. This notebook
goes the way a user would, without writing any Python against the solver:

1. make such a file (here from the project's 2-D heat simulator, so that we know the answer);
2. write a TOML configuration that points at it: which array is which field, the grid spacing,
   the names of the axes;
3. run `mollijax run CONFIG --out DIR` (here through `mollijax.cli.main`, the same code path);
4. read `metrics.json` and `fields.npz` back and plot the recovery;
5. see what the errors look like when the file or the configuration is wrong.

The physics is $u_t = \\nabla\\cdot(D(x, y)\\nabla u)$, the ready problem `heat2d`: recover the
diffusivity $D(x, y)$ from the frames $u(x, y, t)$. Everything is written to a temporary folder.
Set `MOLLIJAX_SMALL=1` for a smaller stack and fewer steps."""),
    ("code", """import json
import os
import pathlib
import tempfile
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import matplotlib.pyplot as plt
import tifffile
import mollijax as mj
from mollijax import cli
from mollijax.config import load_problem

heat2d = load_problem("heat2d")  # problems/heat2d.py

SMALL = os.environ.get("MOLLIJAX_SMALL") == "1"
N = 21 if SMALL else 33        # pixels per side
FRAMES = 17 if SMALL else 33   # time frames
STEPS = 300 if SMALL else 1500
work = pathlib.Path(tempfile.mkdtemp(prefix="mollijax_byod_"))
print("working in", work.name)"""),
    ("md", """## 1. A TIFF stack, as a microscope would write it

We simulate $u$ on $[0, 1]^2 \\times [0, 1]$ with 1 % noise and store it as a camera would: frame
index first (`(frames, rows, columns)`), as 16-bit unsigned integers (a 12-bit range) with a dark
offset and an unknown gain, $\\text{counts} = \\text{dark} + g\\,(u - u_{min})$. The equation is
linear and the offset has no derivatives, so $D$ needs no intensity calibration.

The true $D(x, y)$ goes to a separate `.npz`: a user would not have it, but it lets `mollijax run`
score the recovery."""),
    ("code", """sim = heat2d.simulate(n=N, nt=FRAMES, noise=0.01, seed=0)
u = sim.data["u"]                                   # axes (x, y, t)
frames = np.moveaxis(u, -1, 0)                      # (t, x, y): one page per frame
dark, gain = 100.0, 4000.0 / (frames.max() - frames.min())
counts = np.round(dark + gain * (frames - frames.min())).astype(np.uint16)
tifffile.imwrite(work / "stack.tif", counts, photometric="minisblack")
np.savez(work / "truth.npz", D=sim.truth["D"])

stack = tifffile.imread(work / "stack.tif")
print("stack.tif:", stack.shape, stack.dtype, "min", stack.min(), "max", stack.max())
dt = sim.grid.spacing[2]
h = sim.grid.spacing[0]
print(f"frame interval dt = {dt:.4f}, pixel size h = {h:.4f}")

fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
for ax, k in zip(axes, [0, FRAMES // 8, FRAMES // 3, FRAMES - 1]):
    im = ax.imshow(stack[k].T, origin="lower", extent=(0, 1, 0, 1), cmap="gray")
    ax.set_title(f"frame {k} (t = {k * dt:.2f})"); ax.set_xlabel("x"); ax.set_ylabel("y")
    fig.colorbar(im, ax=ax, shrink=0.85, label="counts")
plt.tight_layout()"""),
    ("md", """## 2. The configuration

`[data] source = "file"` reads the observations from files instead of simulating them:

- `fields` maps each observed field of the problem (`heat2d` observes `u`) to an array: a file of its
  own (`"stack.tif"`, `.npy`) or the name of an array in the `.npz` given by `path`;
- `truth` (optional) does the same for the true unknowns;
- `axes` names the dimensions of the array, in the file's order (a TIFF stack reads as
  `(pages, rows, columns)`); the residual of `heat2d` uses the names `x`, `y` and `t`;
- `spacing` (and `origin`) give the grid step per axis, in the same order.

Paths are relative to the configuration file. Every key is checked when the file is read.

One thing does depend on the intensity scale: the loss is in the units of the data, so the residual
grows like $g^2$ while the smoothness penalty on $D$ does not. A regulariser weight of $10^{-4}$
for data of order one becomes $10^{-4} g^2$ for data in counts (here $g$ is known because we made
the file; with real data, scale the weight with the variance of the stack, or rescale the stack)."""),
    ("code", """def write_config(name, data_table, steps=STEPS, smooth=1e-4 * gain**2):
    text = f'''# heat2d on a user's TIFF stack
[problem]
name = "heat2d"

[data]
source = "file"
{data_table}

[derivatives]
method = "mollifier"
eps = "auto"                 # from the grid and the estimated noise of the stack

[unknowns.D]
representation = "grid"
constraint = "positive"
init = 0.02

[regularisers.D]
smooth = {smooth:.4g}           # 1e-4 times gain**2: the residual is in counts

[optimiser]
name = "adam"
learning_rate = 1e-2
steps = {steps}
chunk = {steps}
'''
    path = work / name
    path.write_text(text)
    return path


data_table = f'''fields = {{u = "stack.tif"}}
path = "truth.npz"
truth = {{D = "D"}}
axes = ["t", "x", "y"]
spacing = [{dt!r}, {h!r}, {h!r}]
origin = [0.0, 0.0, 0.0]'''
config = write_config("run.toml", data_table)
print(config.read_text())"""),
    ("md", """## 3. Run it

`mollijax run run.toml --out result` on the command line; here the same entry point from Python.
It loads and checks the data, builds the problem, fits and writes `metrics.json`, `fields.npz`,
`result.mjx`, PNG plots and a checkpoint (for `--resume`)."""),
    ("code", """out = work / "result"
status = cli.main(["run", str(config), "--out", str(out), "--quiet"])
%matplotlib inline
print("exit status", status, "| files:", sorted(p.name for p in out.iterdir()))
_ = cli.main(["show", str(out)])"""),
    ("md", """(`mollijax run` writes its PNG files with matplotlib's non-interactive backend; `%matplotlib inline`
switches this notebook back to inline figures.)

## 4. Read the results back

`metrics.json` holds the errors against the truth (relative L2 error and correlation on the
interior), the errors of the initial guess, the final loss terms, the kernel widths chosen, the grid
and the whole configuration; `fields.npz` holds the recovered unknowns and their truth."""),
    ("code", """metrics = json.loads((out / "metrics.json").read_text())
print("status:", metrics["status"], "| steps:", metrics["steps"], "| grid:", metrics["grid"]["shape"],
      metrics["grid"]["axes"])
print("eps per axis:", [round(e, 4) for e in metrics["eps"]])
print("D: relative L2 error {rel_l2:.3f}, correlation {corr:.3f}".format(**metrics["errors"]["D"]),
      "(initial guess: {rel_l2:.3f})".format(**metrics["initial_errors"]["D"]))

fields = np.load(out / "fields.npz")
D, D_true = fields["D"], fields["D_truth"]
lo, hi = D_true.min(), D_true.max()
emax = np.abs(D - D_true).max()
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for ax, img, title, kw in [
    (axes[0], D_true, "true D(x, y)", dict(vmin=lo, vmax=hi, cmap="viridis")),
    (axes[1], D, "recovered from stack.tif", dict(vmin=lo, vmax=hi, cmap="viridis")),
    (axes[2], D - D_true, "error", dict(vmin=-emax, vmax=emax, cmap="RdBu_r")),
]:
    im = ax.imshow(img.T, origin="lower", extent=(0, 1, 0, 1), **kw)
    ax.set_xlabel("x"); ax.set_ylabel("y"); ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.85)
plt.tight_layout()"""),
    ("md", """The same data as an `.npz` work identically: `path = "movie.npz"` and `fields = {u = "frames"}`
name the array inside the archive.

## 5. When the data are wrong

Every check happens when the data are loaded, before anything is compiled, and the error names the
field, what was expected and what was found. All of them are `mollijax.MollijaxError`s."""),
    ("code", """from mollijax.config import load_config

def try_run(config):
    # the Python API behind `mollijax run` raises the error; the command line prints the same
    # message on one line and exits with status 2
    try:
        cli.run(load_config(config), work / "bad", progress=False)
    except mj.MollijaxError as e:
        print(f"{type(e).__name__}: {e}".replace(str(work), "<work>"))
    else:
        print("ran without error")"""),
    ("md", """**Dead pixels stored as NaN, without a mask.** A NaN inside the residual would poison every
gradient; mollijax refuses it and says how to declare missing pixels."""),
    ("code", """bad = stack.astype(np.float32)
bad[:, N // 2, N // 3] = np.nan                     # one dead pixel in every frame
tifffile.imwrite(work / "dead_pixel.tif", bad, photometric="minisblack")
try_run(write_config("dead_pixel.toml", data_table.replace("stack.tif", "dead_pixel.tif")))"""),
    ("md", """With a mask (`[data.masks]`, True where observed) the file loads, but the observed field now
has holes, so it cannot be differentiated as data; the message says what to do instead
(a network state, `[state] representation = "mlp"`, fitted to the observed pixels only)."""),
    ("code", """np.save(work / "observed.npy", np.isfinite(bad))
masked = data_table.replace("stack.tif", "dead_pixel.tif") + '\\nmasks = {u = "observed.npy"}'
try_run(write_config("masked.toml", masked))"""),
    ("md", """**A stack with the wrong number of axes.** Forgetting the time axis in `axes`:"""),
    ("code", """try_run(write_config("two_axes.toml", data_table.replace('axes = ["t", "x", "y"]', 'axes = ["x", "y"]')))"""),
    ("md", """**A truth of the wrong shape**, e.g. a map cropped by one row:"""),
    ("code", """np.savez(work / "cropped.npz", D=sim.truth["D"][1:])
try_run(write_config("cropped.toml", data_table.replace("truth.npz", "cropped.npz")))"""),
    ("md", """**Axes in an order the unknown cannot follow.** $D$ depends on `("x", "y")` in that order;
calling the image rows `y` and the columns `x` is caught when the problem is checked:"""),
    ("code", """try_run(write_config("swapped.toml", data_table.replace('["t", "x", "y"]', '["t", "y", "x"]')))"""),
    ("md", """**A typo in the configuration** is reported with the file, the table and the keys it knows:"""),
    ("code", """try_run(write_config("typo.toml", data_table.replace("spacing", "spacings")))"""),
]

nb = nbf.v4.new_notebook()
nb["cells"] = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
               for kind, src in cells]
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/06_bring_your_own_data.ipynb")
