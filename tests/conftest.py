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


# The two xdist workers take whole files from a queue (`--dist loadfile`); handing out the
# most expensive files first (longest-processing-time order) keeps one worker from finishing
# minutes before the other on a long file that came last. xdist's own reordering (by number
# of tests per file) is off in pyproject.toml (`--no-loadscope-reorder`); the files not named
# keep their collection order after these. Costs from `pytest --durations` on 2 cores.
_EXPENSIVE_FIRST = (
    "test_notebooks.py", "test_evolution.py", "test_transport_neural.py", "test_theory_cli.py",
    "test_heat.py", "test_auto_default.py", "test_batch_steady.py", "test_sharding.py",
    "test_uncertainty.py", "test_networks.py", "test_readme.py", "test_integrators.py",
    "test_auto.py", "test_heat1d.py", "test_multiprocess.py", "test_chromatin.py",
    "test_electro_sphere.py", "test_transport.py", "test_fit.py", "test_steady.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(_EXPENSIVE_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
