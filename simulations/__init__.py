"""Experiment launchers and benchmarks (Hydra) on top of the CoOpt Flower apps."""
