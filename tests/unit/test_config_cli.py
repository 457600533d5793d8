"""What the commands say about config.toml: its mistakes with file and line, and never
a report about a config that was corrected since."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from click.testing import CliRunner

from gpuctl.cli import main
from gpuctl.state import Store


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    log = logging.getLogger("gpuctl")
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_a_bad_price_fails_every_command_with_file_and_line(gpuctl_home: Path) -> None:
    config = gpuctl_home / "config.toml"
    config.write_text('default_provider = "local"\n[profiles.local]\nprice_per_hour = "free"\n')
    for args in (["ls"], ["offers"], ["cost"], ["launch", "validate"]):
        code, output = invoke(*args)
        assert code == 2, (args, output)
        assert f"{config} (line 3): [profiles.local] price_per_hour" in output


def test_ls_after_the_config_was_corrected_reports_no_old_error(gpuctl_home: Path) -> None:
    # An earlier listing recorded the provider's error, seconds ago (well within the
    # refresh interval, so the cache counts as fresh by age alone).
    old = "[profiles.local] price_per_hour must be a number of USD per hour, got 'free'"
    with Store(gpuctl_home / "state.db") as store:
        store.set_provider_status("local", False, old)
    config = gpuctl_home / "config.toml"
    config.write_text("[profiles.local]\nprice_per_hour = 0.5\n")
    later = time.time() + 1
    os.utime(config, (later, later))  # corrected after that listing
    code, output = invoke("ls")
    assert code == 0
    assert "free" not in output
    with Store(gpuctl_home / "state.db") as store:
        assert store.provider_statuses()["local"][0] is True


def test_ls_keeps_a_fresh_cache_when_the_config_did_not_change(gpuctl_home: Path) -> None:
    config = gpuctl_home / "config.toml"
    config.write_text("[profiles.local]\nprice_per_hour = 0.5\n")
    earlier = time.time() - 60
    os.utime(config, (earlier, earlier))
    with Store(gpuctl_home / "state.db") as store:
        store.set_provider_status("local", False, "still broken")
    code, output = invoke("ls")
    assert code == 0 and "still broken" in output  # cached: no provider was asked
