"""Optimizers (update parameters in place from gradients) and learning-rate schedules."""
