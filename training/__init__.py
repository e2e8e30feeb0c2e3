"""One training run: its configuration, the data, the input pipeline, epoch checkpoints and the loop."""

__all__ = ["config", "data", "pipeline", "checkpoint", "loop"]
