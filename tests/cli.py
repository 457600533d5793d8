"""Run the real `gpuctl` console script the way a user or a script does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GPUCTL = str(Path(sys.executable).parent / "gpuctl")


def gpuctl(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [GPUCTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
