"""XLA flags of the suite's processes (imported before jax starts; imports nothing itself).

`QUICK`: compile as the library's quick programs do (`mollijax._cache.QUICK_COMPILE`):
without LLVM's optimisations, fusions by the older direct emitters instead of the MLIR
fusion emitters. At the suite's small sizes most of a test is compilation. `ONE_THREAD`: one
XLA thread per process, so that parallel workers do not oversubscribe the cores.
"""

QUICK = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"
