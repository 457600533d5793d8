"""gpuctl's bundled trainer: torch + stdlib only, run as `python -u -m trainer --config run.json`.

Kept import-free (no torch) so `gpuctl.trainer.config` loads fast in the gpuctl CLI.
"""
