"""The headless CLI on an AWS emulator profile: offers, ls, and a missing-credentials error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli import gpuctl, json_lines

from .test_launch import drive, spec


def write_profile(home: Path, endpoint: str) -> None:
    (home / "config.toml").write_text(
        f"""providers = ["aws-test"]

[profiles.aws-test]
provider = "aws"
regions = ["us-east-1", "eu-west-1"]
endpoint_url = "{endpoint}"
max_attempts = 1
"""
    )


def test_offers_sorted_with_spot_saving(aws: str, spot_prices: Any, gpuctl_home: Path) -> None:
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1b")] = 0.35
    write_profile(gpuctl_home, aws)
    proc = gpuctl("offers", "--provider", "aws-test", "--gpu", "A10G")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "SAVE" in lines[0]
    first = lines[1].split()
    assert first[:3] == ["aws-test", "g5.xlarge", "A10G"] and "-65%" in first
    rows = json_lines(gpuctl("offers", "--provider", "aws-test", "--gpu", "a10g", "--json").stdout)
    prices = [r["price_per_hour"] for r in rows]
    assert prices == sorted(prices) and {r["gpu_name"] for r in rows} == {"A10G"}


def test_offers_say_where_each_price_came_from_and_how_old_it_is(
    aws: str, spot_prices: Any, gpuctl_home: Path
) -> None:
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1b")] = 0.35
    write_profile(gpuctl_home, aws)
    proc = gpuctl("offers", "--provider", "aws-test", "--gpu", "A10G", "--region", "us-east-1")
    assert proc.returncode == 0, proc.stderr
    header, first = proc.stdout.splitlines()[:2]
    assert header.rstrip().endswith("SOURCE/AGE")
    assert "catalog 2025-01-15, " in first and "days ago; spot live API, just now" in first
    argv = ["offers", "-p", "aws-test", "--gpu", "A10G", "--region", "us-east-1", "--json"]
    rows = json_lines(gpuctl(*argv).stdout)
    g5 = next(r for r in rows if r["instance_type"] == "g5.xlarge")
    assert g5["price_source"] == "catalog 2025-01-15"
    assert g5["price_age_seconds"] > 300 * 86400  # the bundled file's date, not "now"
    assert 0 <= g5["spot_price_age_seconds"] < 60


def test_ls_shows_managed_instances(
    aws: str, make_provider: Any, gpuctl_home: Path, spot_prices: Any
) -> None:
    instance, _ = drive(make_provider(regions=["eu-west-1"]).launch(spec(run_id="r-cli")))
    write_profile(gpuctl_home, aws)
    proc = gpuctl("ls", "--json")  # lists the providers in config.toml
    assert proc.returncode == 0, proc.stderr
    assert instance.id in proc.stdout and "r-cli" in proc.stdout


def test_missing_credentials_is_one_clear_line(aws: str, gpuctl_home: Path) -> None:
    write_profile(gpuctl_home, aws)
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    proc = gpuctl("offers", "--provider", "aws-test", env=env)
    assert proc.returncode != 0
    assert "no AWS credentials found" in proc.stderr and "aws configure" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_cloud_that_cannot_be_listed_is_unknown_in_ls_and_cost_not_none(
    aws: str, gpuctl_home: Path
) -> None:
    """AWS down (a closed port on loopback): `ls` does not lead with "no instances" and
    `cost` says what it could not count, in text and in --json."""
    write_profile(gpuctl_home, "http://127.0.0.1:9")  # nothing listens there
    listed = gpuctl("ls")
    assert "no instances (" not in listed.stdout, listed.stdout
    assert "aws-test could not be listed" in listed.stdout, listed.stdout
    shown = gpuctl("cost")
    assert shown.returncode == 0, shown.stderr
    assert "unknown: aws-test could not be listed" in shown.stdout, shown.stdout
    as_json = json.loads(gpuctl("cost", "--json").stdout)
    assert [u["provider"] for u in as_json["unlisted"]] == ["aws-test"]
    write_profile(gpuctl_home, aws)  # reachable again: known again
    assert gpuctl("ls").returncode == 0
    assert json.loads(gpuctl("cost", "--json").stdout)["unlisted"] == []
