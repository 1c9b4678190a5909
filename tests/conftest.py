import os

# Under pytest-xdist every core already runs a worker: keep each worker's XLA on one thread,
# so that the workers do not oversubscribe the cores (a user's own XLA_FLAGS win).
if os.environ.get("PYTEST_XDIST_WORKER") and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"

import jax
import pytest

# Numerical tests compare against analytic answers to tight tolerances: run them in float64,
# and refuse silent dtype promotion (python scalars stay weakly typed).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _float64_default():
    yield
