"""cifar-scratch: neural networks written from scratch in NumPy, trained from YAML configs."""

import os

# OpenBLAS's idle threads spin for 2**28 cycles (about 0.1 s) after each GEMM before they sleep,
# taking the cores that the engine's thread pool needs between GEMMs (cifar_scratch.nn.fast.parallel).
# 2**4 makes them sleep at once. Read when NumPy loads OpenBLAS, so it must be set before the first
# NumPy import; a value already in the environment wins. Measured in docs/measurements.md.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
