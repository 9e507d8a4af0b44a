"""The learning stack, used by simulations/ only: the training loop, students on the optimized
data, the linear probe, target-quality statistics and the SSL baselines."""
