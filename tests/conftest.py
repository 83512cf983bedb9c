"""Test settings: no cache of derived notes unless a test asks for one.

A cache shared across tests would let one test's derivation stand in for
another's (and hide a fault a test injects), so ``DERIVE_CACHE_DIR`` is empty
for the suite and for the processes it starts; tests/test_notes_cache.py
points it at a folder of its own.
"""

import os

os.environ["DERIVE_CACHE_DIR"] = ""
