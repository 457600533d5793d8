"""`gpuctl --help` and a cached `gpuctl ls` must not pay for the cloud SDKs, torch or the TUI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("boto3", "botocore", "pydo", "azure", "torch", "textual", "paramiko", "apprise")
PROBE = """
import sys
sys.argv = ["gpuctl", *{args!r}]
from gpuctl.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["ls", "--cached"], ["presets"], ["ls", "--runs"]])
def test_fast_paths_import_no_heavy_module(gpuctl_home: Path, args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY="))
    assert line == "HEAVY=", f"gpuctl {' '.join(args)} imported {line[6:]}"
