"""Checks and measurements behind ``cifar-scratch gradcheck`` and ``cifar-scratch benchmark``."""
