"""Pieces every layer shares: the usage-error type and the command-line wrapper."""
