"""Command line: `python -u -m trainer --config run.json [--resume | --auto-resume]`.

Exit codes: 0 finished or gracefully interrupted, 1 failed, 2 bad config. The config
is checked before torch is imported, so a typo fails in milliseconds, not seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from . import config as config_mod
from .config import ConfigError
from .protocol import EVENTS_FILE, STATUS_FILE, Phase, TrainerEvent

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer", description="gpuctl's bundled trainer (torch + stdlib only)."
    )
    p.add_argument("--config", required=True, help="resolved run config (.json or .toml)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue from last.pt in out_dir (error if none)"
    )
    mode.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from last.pt when there is one, else start fresh (spot restarts)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable)",
    )
    p.add_argument("--check", action="store_true", help="validate, print the config, exit")
    return p


def _write_config_failure(raw: dict[str, object] | None, config_path: Path, reason: str) -> None:
    """Leave status failed + a failed event where gpuctl looks, if we can tell where that is."""
    import os
    import time

    from .outputs import write_json_atomic

    out_dir = config_path.parent
    if isinstance(raw, dict) and isinstance(raw.get("out_dir"), str):
        out_dir = config_path.parent / str(raw["out_dir"])
    try:
        if not out_dir.is_dir():
            return
        now = time.time()
        status = {
            "phase": Phase.FAILED,
            "epoch": 0,
            "epochs": None,
            "step": 0,
            "steps_per_epoch": None,
            "eta_seconds": None,
            "updated_at": now,
            "pid": os.getpid(),
            "best_metric": None,
            "reason": reason,
        }
        write_json_atomic(out_dir / STATUS_FILE, status)
        with open(out_dir / EVENTS_FILE, "a", encoding="utf-8") as f:
            f.write(
                json.dumps({"event": TrainerEvent.FAILED, "time": now, "reason": reason}) + "\n"
            )
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Parse, validate (before torch), then hand over to the loop."""
    args = _parser().parse_args(argv)
    config_path = Path(args.config)
    raw: dict[str, object] | None = None
    try:
        raw = config_mod.read_raw(config_path)
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
            raw[key.strip()] = config_mod.coerce(key.strip(), value)
        cfg = config_mod.validate(raw)
    except ConfigError as exc:
        print(f"trainer: config error: {exc}", file=sys.stderr, flush=True)
        if config_path.exists():
            _write_config_failure(raw, config_path, f"config error: {exc}")
        return EXIT_CONFIG
    cfg = config_mod.resolve_paths(cfg, config_path.parent)
    if args.check:
        print(json.dumps(config_mod.to_dict(cfg), indent=1, sort_keys=True))
        return EXIT_OK
    # the CPU-only torch wheel warns about a missing numpy on import; it is not used here
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    from .loop import run

    return run(cfg, resume=args.resume, auto_resume=args.auto_resume)
