"""`python -m gpuctl` is the `gpuctl` command."""

from gpuctl.cli import main

main()
