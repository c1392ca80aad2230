"""Benchmarks: the paper's experiments on our zoos, as data files with committed results."""
