"""`python -m gpuctl` is the `gpuctl` command."""

from gpuctl.entry import run

run()
