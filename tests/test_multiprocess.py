"""Two processes on this machine with JAX's distributed runtime (CPU collectives through
gloo): a batch sharded over both processes' devices and a grid split along x with halo
exchange equal the single-device results of the same computations.

Each process runs `multiprocess_script.py` (2 CPU devices each, a 4-device global mesh);
process 0 writes the measured differences, asserted on here.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from xla_flags import ONE_THREAD, QUICK

SCRIPT = pathlib.Path(__file__).with_name("multiprocess_script.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif("jax_cpu_collectives_implementation" not in jax.config.values,
                    reason="this jax has no CPU collectives (jax_cpu_collectives_implementation)")
def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "result.json"
    port = str(_free_port())
    # one XLA thread each, compiled without LLVM optimisations as in the suite's workers
    # (tests/conftest.py): the two processes mostly compile
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{ONE_THREAD} {QUICK}")
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(i), port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    result = json.loads(out.read_text())
    assert result["processes"] == 2 and result["devices"] == 4
    # a batch of fits with its stack sharded over both processes: the same fits
    assert result["batch"]["values"] < 1e-12 and result["batch"]["history"] < 1e-12
    np.testing.assert_allclose(result["batch"]["k"], np.pi**2, rtol=0.01)  # k u = -u_xx
    # derivatives of a field split along x over 4 devices in 2 processes (halo exchange)
    assert result["grid"]["odd"] < 1e-13 and result["grid"]["periodic"] < 1e-13
