import jax
import pytest

# Numerical tests compare against analytic answers to tight tolerances: run them in float64,
# and refuse silent dtype promotion (python scalars stay weakly typed).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _float64_default():
    yield
