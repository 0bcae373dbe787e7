"""Experiments over lmms-eval runs: sweeps, reports, statistics, plots, configs and benchmarks."""
