"""Pieces every layer shares: the usage-error type, the command wrapper, logging, files, the machine."""

__all__ = ["errors", "cli", "log", "files", "machine"]
