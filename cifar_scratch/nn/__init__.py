"""The NumPy engine: pure kernels (`functional`), thin stateful layers, a sequential model."""
