"""Which provider kinds exist and where each driver class lives, imported on first use.

Apart from the Provider protocol (gpuctl/providers/base.py) so the config loader can
check a profile's kind without importing the drivers' types, which depend on it.
Drivers are imported lazily by name so `gpuctl --help` never pays for boto3 or pydo.
"""

from __future__ import annotations

import importlib

from .errors import ConfigError

# kind -> "module:Class", imported on first use.
_REGISTRY: dict[str, str] = {
    "local": "gpuctl.providers.local:LocalProvider",
    "ssh": "gpuctl.providers.ssh:SshProvider",
    "aws": "gpuctl.providers.aws:AwsProvider",
    "digitalocean": "gpuctl.providers.digitalocean:DigitalOceanProvider",
}


def kinds() -> list[str]:
    return sorted(_REGISTRY)


def register(kind: str, target: str) -> None:
    """Add a driver (tests register fakes this way; plugins could too)."""
    _REGISTRY[kind] = target


def provider_class(kind: str) -> type:
    try:
        target = _REGISTRY[kind]
    except KeyError:
        raise ConfigError(
            f"unknown provider kind '{kind}'", hint=f"known kinds: {', '.join(kinds())}"
        ) from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"provider '{kind}' is not available in this installation ({exc.name} missing)",
            hint="reinstall gpuctl with its dependencies (make run does this)",
        ) from None
    return getattr(module, cls_name)
