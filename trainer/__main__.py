"""Entry point: `python -u -m trainer --config run.json [--resume]`."""

from .stop import catch_early

catch_early()  # before anything heavy: a stop during the imports is graceful, not fatal

from .cli import main  # noqa: E402 - after the signal handlers, on purpose

if __name__ == "__main__":
    raise SystemExit(main())
