import os

# Under pytest-xdist every core already runs a worker: keep each worker's XLA on one thread,
# so that the workers do not oversubscribe the cores (a user's own XLA_FLAGS win).
if os.environ.get("PYTEST_XDIST_WORKER"):
    if "XLA_FLAGS" not in os.environ:
        # and compile as the library's quick programs do (`mollijax._cache.QUICK_COMPILE`):
        # without LLVM's optimisations, fusions by the older direct emitters instead of the
        # MLIR fusion emitters. At the suite's small sizes most of a test is compilation: user
        # CPU of test_evolution + test_steady + test_heat1d + test_fit 173 s -> 143 s with the
        # level alone; then test_fit + test_steady 105 s -> 69 s and test_networks +
        # test_evolution + test_auto_default 223 s -> 135 s with the emitters too (one core,
        # the same passes)
        from xla_flags import ONE_THREAD, QUICK

        os.environ["XLA_FLAGS"] = f"{ONE_THREAD} {QUICK}"
    # the same for the BLAS/LAPACK threads behind small dense solves (LU of a steady state,
    # a propagator): spinning threads made a 102 x 102 solve 30x slower on 2 busy cores
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

# The command line keeps compiled programs in the user's cache folder (`mollijax run`'s
# persistent compilation cache): the suite's command-line subprocesses use a folder of their
# own, removed at the end, so that the tests neither write into the user's cache nor load
# what an earlier run left there (a user's own MOLLIJAX_COMPILATION_CACHE wins). Set once,
# in the controlling process; the xdist workers inherit it.
if "MOLLIJAX_COMPILATION_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache_folder = tempfile.mkdtemp(prefix="mollijax-tests-cache-")
    os.environ["MOLLIJAX_COMPILATION_CACHE"] = _cache_folder
    atexit.register(shutil.rmtree, _cache_folder, ignore_errors=True)

import jax
import pytest

# Numerical tests compare against analytic answers to tight tolerances: run them in float64,
# and refuse silent dtype promotion (python scalars stay weakly typed).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


# Files whose tests take longest (summed over a file, one 2-core run), scheduled
# first: pytest-xdist hands whole files to workers (--dist loadfile) in collection order
# (--no-loadscope-reorder; its default order, by number of tests, sent these few-test heavy
# files last, and one worker ran them alone at the end). Longest first is the classic
# list-scheduling rule; the rest keep their collection order.
HEAVY_FIRST = (  # by the summed test time of one full run (junit report, 2 workers)
    "tests/test_notebooks.py",
    "tests/theory/test_transport_neural.py",
    "tests/test_networks.py",
    "tests/solver/test_steady.py",
    "tests/theory/test_theory_cli.py",
    "tests/solver/test_fit.py",
    "tests/test_auto_default.py",
    "tests/solver/test_evolution.py",
    "tests/theory/test_electro.py",
    "tests/problems/test_heat.py",
    "tests/solver/test_uncertainty.py",
    "tests/theory/test_transport.py",
    "tests/solver/test_integrators.py",
    "tests/test_differentiators.py",
    "tests/theory/test_electro_sphere.py",
    "tests/solver/test_problem.py",
    "tests/solver/test_sharding.py",
    "tests/problems/test_chromatin.py",
    "tests/solver/test_lbfgs.py",
    "tests/problems/test_plate.py",
    "tests/test_readme.py",
    "tests/solver/test_domain.py",
    "tests/solver/test_auto.py",
    "tests/test_multiprocess.py",
    "tests/solver/test_batch_steady.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}

    def key(item):
        path = item.nodeid.split("::", 1)[0]
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: the order within and among the other files is kept


@pytest.fixture(autouse=True)
def _float64_default():
    yield


# Every compiled XLA executable holds a few memory mappings (about 3 on CPU), and the jit
# caches of the library's module-level functions keep every shape a test file compiled. One
# process running half the suite neared Linux's limit on mappings (vm.max_map_count, 65530 by
# default): two one-worker runs died with a segmentation fault inside XLA's compiler, about
# half-way through. Past half the limit, the caches are cleared between test files (freeing
# the executables; a later file recompiles what it needs).
MAPPINGS_KEPT = 0.5


def _mappings() -> tuple[int, int]:
    """(memory mappings of this process, the system's limit); (0, 1) where unknown."""
    try:
        with open("/proc/self/maps") as maps, open("/proc/sys/vm/max_map_count") as limit:
            return sum(1 for _ in maps), int(limit.read())
    except (OSError, ValueError):
        return 0, 1


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    yield
    used, limit = _mappings()
    if used > MAPPINGS_KEPT * limit:
        jax.clear_caches()
