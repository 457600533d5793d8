"""Errors the trainer reports as one clear line (status failed, exit 1), no traceback."""


class TrainerError(RuntimeError):
    """A run cannot go on for a reason the user can fix (missing data, bad task, ...)."""
