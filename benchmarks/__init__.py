"""Benchmarks: figures, not tests. Ratios are measured side by side in one run, because machines are noisy."""
