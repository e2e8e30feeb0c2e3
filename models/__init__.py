"""The schedule math (``schedules``: pure NumPy) and the network (``resnet``: Keras 3)."""

__all__ = ["schedules", "resnet"]
