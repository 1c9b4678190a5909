"""Theory demonstrations: views of deep learning as physics, built on mollijax's public API.

- `electro.py`: depth-2 networks as electrodynamics (docs/theory_electrodynamics.md);
- `transport.py`: infinitely deep denoising autoencoders as transport
  (docs/theory_transport.md).

Each of the two defines `run(config, out) -> metrics`, which `mollijax theory electro|transport`
calls after loading the file by path. The files use only `import mollijax as mj` and import
their helpers (`_electro_*.py`, `_transport_*.py`) relatively, so this folder is never installed
as a package of its own; the library never imports it.
"""
