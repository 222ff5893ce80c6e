"""Training: the loop, checkpoints, run folders, and the run lifecycle (start, resume, finish)."""
