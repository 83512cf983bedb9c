"""Test settings: no cache of derived notes unless a test asks for one.

A cache shared across tests would let one test's derivation stand in for
another's (and hide a fault a test injects), so ``DERIVE_CACHE_DIR`` is empty
for the suite and for the processes it starts; tests/test_notes_cache.py
points it at a folder of its own.

NumPy's BLAS runs on one thread in the suite and the processes it starts: the
tests' matrices are small, and threads that contend for two cores with the other
tests' processes only slow them down.
"""

import os

os.environ["DERIVE_CACHE_DIR"] = ""
for _threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")
