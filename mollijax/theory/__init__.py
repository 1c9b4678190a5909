"""Theory: views of deep learning as physics, built on the mollijax core (never imported by it)."""

from .electro import (
    Charges as Charges,
    GaussianUnit as GaussianUnit,
    ScreenedUnit as ScreenedUnit,
    run_electro as run_electro,
)
from .transport import (
    GaussianMixture as GaussianMixture,
    exact_flow as exact_flow,
    fit_diffusion as fit_diffusion,
    run_transport as run_transport,
    trained_dae_stack as trained_dae_stack,
)
