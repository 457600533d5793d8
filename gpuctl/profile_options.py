"""The keys a provider profile in config.toml accepts, per provider kind: type, default, help.

`[profiles.NAME]` takes the options every profile has (COMMON, read by the core: prices,
budget stops, boot and recovery timing) plus its kind's own. settings.py checks every
profile against its kind's table when config.toml is read, so a typo or a wrong type is
reported with file and line before anything is created; the drivers read typed values
through `Profile.value`, and the defaults live here, once. The README's profile key table
is checked against these tables both ways.

Light on purpose: the config loader imports it on every command, so no driver and no
cloud SDK is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import checks
from .checks import Check


@dataclass(frozen=True)
class Option:
    """One profile key. `old_names` are earlier spellings still read (with a warning);
    `flag` is the launch flag that sets it for one run (the flag wins)."""

    name: str
    check: Check
    type: str  # in words, for the README and error hints
    default: Any
    help: str
    old_names: tuple[str, ...] = ()
    flag: str = ""

    def default_text(self) -> str:
        """The default as config.toml would spell it; "" for none (the driver decides)."""
        import json  # only the README test and help need it, not every command

        if self.default is None:
            return ""
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return json.dumps(self.default)


def _num(
    name: str, default: float | None, help: str, *, positive: bool = True, old: tuple[str, ...] = ()
) -> Option:
    bound = {"above": 0.0} if positive else {"at_least": 0.0}
    kind = "number > 0" if positive else "number >= 0"
    return Option(name, checks.number(**bound), kind, default, help, old)


def _int(name: str, default: int, low: int, high: int, help: str) -> Option:
    return Option(name, checks.integer(low, high), f"whole number {low}-{high}", default, help)


def _str(name: str, default: str | None, help: str) -> Option:
    return Option(name, checks.string, "string", default, help)


def _strs(name: str, default: list[str] | None, help: str) -> Option:
    return Option(name, checks.strings, "list of strings", default, help)


def _command(name: str, default: list[str], help: str) -> Option:
    return Option(name, checks.command, "command (list of strings)", default, help)


def _bool(name: str, default: bool | None, help: str) -> Option:
    return Option(name, checks.boolean, "true/false", default, help)


def _table(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


# Read by the core for every profile, whatever its kind.
COMMON = _table(
    _str("provider", None, "the driver: local, ssh, aws or digitalocean"),
    Option(
        "price_per_hour",
        checks.price,
        "USD per hour",
        None,
        "what the meter bills per hour for this profile's machines (local, ssh: 0)",
    ),
    _num(
        "stop_margin_seconds",
        None,
        "how early a budget stop fires (default: the driver's billing rule)",
        positive=False,
    ),
    _num("boot_wait", 300.0, "seconds a new machine may take to answer SSH", positive=False),
    _num("link_lost_seconds", 600.0, "`gpuctl run` gives up on a silent machine after this"),
    _num("agent_time_scale", 1.0, "scales the agent's time limits (for tests)"),
    _str("python", None, "the machine's python (default: found by the probe)"),
    _str("torch_index_url", None, "where pip gets torch (default: matched to CUDA or ROCm)"),
    _str("metadata_url", None, "where the agent reads a spot notice (default: AWS IMDS)"),
    _num("spot_poll_seconds", 5.0, "how often the agent checks for a spot notice"),
    _num("spot_grace_seconds", 150.0, "after a spot notice, how long the cloud has to act"),
    _num("recovery_poll_seconds", 5.0, "how often recovery asks about a lost machine"),
    _num("unreachable_seconds", 300.0, "a silent machine is terminated after this"),
    _num("checkpoint_pull_seconds", 100.0, "time allowed to copy last.pt after a spot notice"),
)

LOCAL = _table(
    _str("root", None, "where local runs live (default: <data dir>/local)"),
)

SSH = _table(
    _str("host", None, "user@host[:port] when --host is not given"),
    _str("identity", None, "SSH private key (default: ssh-agent, ~/.ssh/config)"),
    _num("connect_timeout", 10.0, "seconds to wait for an SSH connection"),
    _str("remote_base", None, "gpuctl's directory on the machine (default: ~/gpuctl)"),
)

# Options of profiles that reach a cloud machine over SSH (aws, digitalocean).
_MACHINE_SSH = (
    Option(
        "max_price_per_hour",
        checks.number(above=0.0),
        "number > 0",
        None,
        "the most a machine may bill per hour; a spot price read back above it stops the "
        "run like a budget (one run: --max-price)",
    ),
    _str("ssh_cidr", None, "the address SSH is allowed from (default: your public IP /32)"),
    _str("checkip_url", None, "where gpuctl asks for your public IP"),
    _bool("allow_open_ssh", False, "launch even when SSH cannot be limited to your address"),
    _str("ssh_host", None, "connect here instead of the machine's public IP"),
    _int("ssh_port", 22, 1, 65535, "the machine's SSH port"),
    _str("ssh_key", None, "SSH private key (default: the key gpuctl made)"),
    _str("instance_type", None, "the type launched when none is named"),
)

AWS = _table(
    _strs("regions", ["us-east-1"], "regions searched for offers, in order of preference"),
    _str("aws_profile", None, "the AWS credentials profile (default: boto3's chain)"),
    Option(
        "key_name",
        checks.string,
        "string",
        None,
        "launch with this existing EC2 key pair (one run: --key-name)",
        flag="--key-name",
    ),
    Option(
        "checkpoint_bucket",
        checks.string,
        "string",
        None,
        "S3 bucket for spot checkpoints (one run: --checkpoint-bucket)",
        flag="--checkpoint-bucket",
    ),
    _str("endpoint_url", None, "an EC2-compatible endpoint (an emulator)"),
    _strs("image_owners", None, "AMI owners searched (default: amazon)"),
    _bool("live_prices", True, "ask the AWS Price List API (false: bundled prices)"),
    _num("spot_history_seconds", 300.0, "how long a spot price lookup is reused", positive=False),
    _num("poll_seconds", 5.0, "how often a launch or a teardown asks for the state"),
    _num("launch_timeout", 600.0, "seconds an instance may take to run"),
    _num("terminate_timeout", 600.0, "seconds a termination may take to be verified"),
    _int("max_attempts", 5, 1, 100, "attempts per AWS API call"),
    _str("ssh_user", None, "SSH user (default: the image's)"),
    _command(
        "shutdown_command", ["sudo", "shutdown", "-h", "now"], "how the agent ends the machine"
    ),
    *_MACHINE_SSH,
)

DIGITALOCEAN = _table(
    _str("endpoint", None, "the API (default: DigitalOcean's; the amd profile: AMD's)"),
    _str("token_env", None, "the environment variable holding the API token"),
    _str("agent_token_env", None, "the droplet-scoped token for the agent on the machine"),
    _str("gpu_vendor", None, "only offers of this GPU vendor (the amd profile: amd)"),
    _strs("regions", [], "regions allowed (empty: all)"),
    _str("image", None, "the droplet image (default: the PyTorch image for the GPU)"),
    _int("page_size", 200, 1, 200, "items per API page"),
    _num("poll_seconds", 3.0, "how often a launch or a teardown asks", old=("poll_interval",)),
    _num(
        "launch_timeout",
        900.0,
        "seconds a droplet may take to become active",
        old=("boot_timeout",),
    ),
    _num("action_timeout", 300.0, "seconds a power action may take"),
    _int("api_attempts", 5, 1, 100, "attempts per API call"),
    _num("max_rate_wait", 60.0, "longest wait for a rate limit to lift", positive=False),
    _num("offers_cache_seconds", 300.0, "how long sizes and prices are reused", positive=False),
    _bool("firewall", True, "create the gpuctl-ssh cloud firewall"),
    _bool("agent_destroy", None, "a limit destroys the droplet (default: with an agent token)"),
    _str("ssh_user", "root", "SSH user"),
    _command("shutdown_command", ["shutdown", "-h", "now"], "how the agent powers off"),
    *_MACHINE_SSH,
)

# Each kind's own options (COMMON comes on top). A driver registered later without an
# entry here has only COMMON checked; its other keys pass through for it to read.
BY_KIND: Mapping[str, Mapping[str, Option]] = {
    "local": LOCAL,
    "ssh": SSH,
    "aws": AWS,
    "digitalocean": DIGITALOCEAN,
}


def schema(kind: str) -> dict[str, Option] | None:
    """Every option a profile of this kind takes, or None for a kind with no table."""
    own = BY_KIND.get(kind)
    return None if own is None else {**COMMON, **own}


def renamed(kind: str) -> dict[str, str]:
    """Old key -> its current name, for this kind's options."""
    return {old: o.name for o in (schema(kind) or COMMON).values() for old in o.old_names}


def option(kind: str, key: str) -> Option | None:
    """The option `key` of a profile of this kind (COMMON for a kind with no table)."""
    return (schema(kind) or COMMON).get(key)


def kinds_of(key: str) -> list[str]:
    """The kinds whose profiles take `key`, for a hint on a key set in the wrong profile."""
    return sorted(k for k, own in BY_KIND.items() if key in own)
