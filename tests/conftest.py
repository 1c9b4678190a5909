import os

# Under pytest-xdist every core already runs a worker: keep each worker's XLA on one thread,
# so that the workers do not oversubscribe the cores (a user's own XLA_FLAGS win).
if os.environ.get("PYTEST_XDIST_WORKER"):
    if "XLA_FLAGS" not in os.environ:
        # and compile without LLVM's optimisations: at the suite's small sizes most of a test
        # is compilation (user CPU of test_evolution + test_steady + test_heat1d + test_fit
        # 173 s -> 143 s, the same 50 passes)
        os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                   "--xla_backend_optimization_level=0")
    # the same for the BLAS/LAPACK threads behind small dense solves (LU of a steady state,
    # a propagator): spinning threads made a 102 x 102 solve 30x slower on 2 busy cores
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import jax
import pytest

# Numerical tests compare against analytic answers to tight tolerances: run them in float64,
# and refuse silent dtype promotion (python scalars stay weakly typed).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _float64_default():
    yield
