"""Theory: views of deep learning as physics, built on the mollijax core (never imported by it)."""

from .electro import (
    Charges as Charges,
    GaussianUnit as GaussianUnit,
    ScreenedUnit as ScreenedUnit,
    run_electro as run_electro,
)
