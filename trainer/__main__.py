"""Entry point: `python -u -m trainer --config run.json [--resume]`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
