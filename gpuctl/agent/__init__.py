"""Stdlib-only agent shipped to each machine: starts the trainer detached and guards it."""
