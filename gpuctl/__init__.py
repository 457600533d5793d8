"""gpuctl: a terminal control center for training on rented GPUs."""

__version__ = "0.1.0"
