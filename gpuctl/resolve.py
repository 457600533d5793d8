"""A launch request checked and resolved into a LaunchSpec before anything is created.

Every mistake that can be found without renting anything is found here: an unknown
preset, a bad number, a flag the provider would silently ignore, an unwritable results
dir. Nothing is recorded or created until this has passed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cost, ownership, profile_options, project, results
from .errors import ConfigError
from .models import LaunchSpec
from .numbers import finite_nonnegative, finite_positive
from .project import Mode, Project
from .settings import Settings

if TYPE_CHECKING:
    from gpuctl.presets.loader import Preset

TEARDOWN_POLICIES = ("terminate", "stop", "keep")
FALLBACKS = ("none", "on-demand")


def new_run_id(preset: str) -> str:
    """PRESET-YYMMDD-xxxx: the preset name is checked so the id survives every tag."""
    ownership.check_name(preset, "preset")
    return f"{preset}-{time.strftime('%y%m%d')}-{secrets.token_hex(2)}"


def refuse_unsupported(profile: Any, **given: Any) -> None:
    """A launch flag the provider would silently ignore is refused: a user who asked for
    spot or a p4d must not get a CPU run on the laptop, nor an estimate for the wrong type."""
    from gpuctl.driver_registry import provider_class
    from gpuctl.providers.base import FLAGS, kinds_honouring

    honoured = provider_class(profile.provider).launch_flags
    for key, value in given.items():
        if value in (None, False, (), [], "") or key in honoured or key not in FLAGS:
            continue
        flag = FLAGS[key]
        others = ", ".join(kinds_honouring(key))
        raise ConfigError(
            f"{flag} does nothing on the {profile.provider} provider (profile '{profile.name}')",
            hint=f"drop {flag}"
            + (f", or use a provider that honours it: {others}" if others else ""),
        )


def resolve(
    settings: Settings,
    preset: str | None,
    *,
    provider: str | None = None,
    overrides: Sequence[str] = (),
    base: str | None = None,
    budget: float | None = None,
    max_hours: float | None = None,
    idle_minutes: float | None = None,
    stall_minutes: float | None = None,
    workdir: str | None = None,
    excludes: Sequence[str] = (),
    include_secrets: Sequence[str] = (),
    instance_type: str | None = None,
    region: str | None = None,
    regions: Sequence[str] = (),
    spot: bool = False,
    max_price: float | None = None,
    fallback: str = "none",
    image: str | None = None,
    disk_gb: int | None = None,
    host: str | None = None,
    identity: str | None = None,
    instance_id: str | None = None,
    managed: bool | None = None,
    teardown: str | None = None,
    require_gpu: bool = False,
    options: dict[str, Any] | None = None,
    command: str | None = None,
) -> LaunchSpec:
    """Check everything that can be checked before anything is created or paid for."""
    from gpuctl.presets.loader import resolve as resolve_preset

    found = project.discover(Path(workdir).expanduser() if workdir else None)
    mode = pick_mode(found, preset, command, overrides, base)
    if mode is not None:  # the mode's defaults, where no flag was given
        given = mode.launch
        if provider is None and found is not None and "provider" in given:
            provider = given["provider"]
            try:  # a typo in the file is reported where it is
                settings.profile(provider)
            except ConfigError as exc:
                raise ConfigError(
                    f"{found.file}:{mode.line}: mode '{mode.name}': {exc.message}", hint=exc.hint
                ) from None
        provider = provider or given.get("provider")
        # A machine default the chosen provider has no use for (spot on `local`) is for
        # another provider: dropped, where the same flag typed by the user is refused.
        honoured = machine_defaults(settings, provider, given)
        instance_type = instance_type or honoured.get("type")
        region = region or honoured.get("region")
        spot = spot or bool(honoured.get("spot"))
        budget = budget if budget is not None else given.get("budget")
        max_hours = max_hours if max_hours is not None else given.get("max_hours")
        if idle_minutes is None:
            idle_minutes = given.get("idle_minutes")
        if stall_minutes is None:
            stall_minutes = given.get("stall_minutes")
        disk_gb = disk_gb or honoured.get("disk_gb")
        teardown = teardown or given.get("teardown")
    if mode is not None and mode.command:
        chosen = command_preset(mode, settings)
    elif mode is not None:
        chosen = resolve_preset(str(mode.preset), (), user_dir=settings.presets_dir)
        chosen = resolve_preset_overrides(chosen, mode, overrides)
    else:
        chosen = resolve_preset(str(preset), overrides, base=base, user_dir=settings.presets_dir)
    ownership.check_name(chosen.name, "preset")  # before anything is created
    profile = settings.profile(provider or settings.default_provider)
    options = {**profile.launch_options(), **(options or {})}  # a flag wins over config
    cost.profile_price(profile)  # a bad price_per_hour fails here, not mid-launch
    for name, value in (("budget", budget), ("max-hours", max_hours), ("max-price", max_price)):
        if value is not None:
            finite_positive(
                value,
                f"--{name}",
                hint="amounts are in USD and hours; leave it out for no limit"
                if name != "max-hours"
                else "e.g. --max-hours 4",
            )
    if idle_minutes is not None:
        finite_nonnegative(idle_minutes, "--idle-minutes", hint="0 turns the idle stop off")
    refuse_unsupported(
        profile,
        spot=spot,
        instance_type=instance_type,
        region=region,
        regions=regions,
        max_price=max_price,
        fallback=fallback if fallback != "none" else None,
        image=image,
        disk_gb=disk_gb,
        host=host,
        identity=identity,
        **{k: v for k, v in (options or {}).items() if k != "force"},
    )
    if max_price is None and profile_options.option(profile.provider, "max_price_per_hour"):
        max_price = profile.get("max_price_per_hour")  # the profile's cap; the flag wins
    if stall_minutes is not None:
        finite_nonnegative(stall_minutes, "--stall-minutes", hint="0 turns it off")
    if stall_minutes is None:
        stall_minutes = chosen.stall_minutes
    if stall_minutes is None:
        stall_minutes = settings.stall_minutes
    if disk_gb is not None and disk_gb < 8:
        raise ConfigError(f"--disk must be at least 8 GB, got {disk_gb}")
    teardown = teardown or settings.teardown
    if teardown not in TEARDOWN_POLICIES:
        raise ConfigError(
            f"unknown teardown policy '{teardown}'", hint="use terminate, stop or keep"
        )
    if fallback not in FALLBACKS:
        raise ConfigError(f"unknown fallback '{fallback}'", hint="use none or on-demand")
    workdir_path = None
    if found is not None and mode is not None:
        workdir = str(found.root)  # the project is what goes to the machine
        excludes = (*found.upload_excludes(), *excludes)
    elif mode is not None and workdir is None:
        workdir = "."  # an ad-hoc --command runs in a copy of the current directory
    if workdir is not None:
        if not workdir.strip():
            raise ConfigError(
                "--workdir is empty", hint="name your project directory, e.g. --workdir ."
            )
        wd = Path(workdir).expanduser()
        if wd.is_file():
            raise ConfigError(
                f"work directory {workdir} is a file, not a directory",
                hint="pass the directory that holds your project",
            )
        if not wd.is_dir():
            raise ConfigError(
                f"work directory {workdir} does not exist", hint="pass an existing directory"
            )
        workdir_path = str(wd.resolve())
        ad_hoc = mode is not None and mode.command is not None and found is None
        check_upload(Path(workdir_path), excludes, include_secrets, ad_hoc and workdir == ".")
    if host:  # a typo in --host fails here, before any run is recorded
        from gpuctl.remote.endpoint import parse_host_spec

        parse_host_spec(host)
    if identity:  # a missing key file fails here, not at the first SSH contact
        check_key_file(identity, "--identity")
    if profile.provider == "ssh" and not (host or profile.get("host")):
        raise ConfigError(
            "the ssh provider needs --host user@ip[:port]",
            hint="or set host = ... under [profiles.ssh] in config.toml",
        )
    results.check_writable(settings.results_dir, "results_dir")  # before any rent
    job = command_job(found, mode) if mode is not None and mode.command else {}
    if job:
        from gpuctl import datasets

        datasets.check_credentials(job, options.get("aws_profile"))
    run_id = new_run_id(chosen.name)
    train = dict(chosen.train)
    train.update(run_id=run_id, preset=chosen.name)
    return LaunchSpec(
        run_id=run_id,
        preset=chosen.name,
        provider=profile.name,
        train=train,
        instance_type=instance_type,
        region=region,
        regions=tuple(regions),
        spot=spot,
        max_price=max_price,
        fallback=fallback,
        image=image,
        disk_gb=disk_gb or chosen.disk_gb,
        budget=budget,
        max_hours=max_hours or capped(settings, "max_hours", chosen.max_hours),
        idle_minutes=idle_minutes
        if idle_minutes is not None
        else capped(settings, "idle_minutes", chosen.idle_minutes),
        stall_minutes=stall_minutes or None,
        workdir=workdir_path,
        excludes=tuple(excludes),
        include_secrets=tuple(include_secrets),
        host=host or profile.get("host"),
        identity=identity,
        instance_id=instance_id,
        managed=spot if managed is None else managed,
        teardown=teardown,
        require_gpu=require_gpu,
        options=options or {},
        job=job,
    )


def capped(settings: Settings, key: str, preset_value: float | None) -> float | None:
    """A preset's limit under config.toml's [defaults] cap, the smaller winning (a
    flag given on the command line is the user's explicit choice and is not capped).
    A cap of 0 or less caps nothing; a preset without a limit gets the cap."""
    cap = getattr(settings, key) if key in settings.defaults_given else None
    if cap is None or cap <= 0:
        return (preset_value or settings.max_hours) if key == "max_hours" else preset_value
    return cap if not preset_value or preset_value <= 0 else min(cap, preset_value)


def check_key_file(path: str, what: str) -> None:
    """An SSH private key named on the command line must be a readable file."""
    key = Path(path).expanduser()
    if key.is_dir():
        raise ConfigError(f"{what} {path} is a directory", hint="name the private key file")
    try:
        with key.open("rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {path} does not exist",
            hint="name an existing private key, e.g. ~/.ssh/id_ed25519",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} cannot be read ({exc.strerror or exc})",
            hint="check the file's permissions (it should be yours, mode 0600)",
        ) from None


# -- the user's project ------------------------------------------------------------------------


UPLOAD_MOST_FILES = 20_000
UPLOAD_MOST_BYTES = 10 * 1024**3


def check_upload(
    root: Path, excludes: Sequence[str], include_secrets: Sequence[str], ad_hoc: bool
) -> None:
    """A command's code upload, sized before any run is recorded: `--command` typed in `/`
    or a home directory would copy the whole disk to a machine billed by the hour."""
    from .files import walk_tree

    where = f"the current directory ({root})" if ad_hoc else f"work directory {root}"
    hint = (
        "run it from your project's directory (or pass --workdir DIR); a .gitignore or "
        "--exclude leaves files out, [data] in gpuctl.toml uploads a dataset once"
    )
    if root == Path(root.anchor) or root == Path.home().resolve():
        raise ConfigError(f"{where} is too wide: gpuctl would upload all of it", hint=hint)
    files = walk_tree(root, excludes, include_secrets, most=UPLOAD_MOST_FILES)
    size = sum(f.size for f in files)
    if len(files) > UPLOAD_MOST_FILES or size > UPLOAD_MOST_BYTES:
        amount = (
            f"more than {UPLOAD_MOST_FILES:,} files"
            if len(files) > UPLOAD_MOST_FILES
            else f"{size / 1024**3:.1f} GB"
        )
        raise ConfigError(f"{where} holds {amount} to upload", hint=hint)


def machine_defaults(settings: Settings, provider: str | None, given: Any) -> dict[str, Any]:
    """The mode's machine defaults (type, region, spot, disk) the provider honours."""
    from gpuctl.driver_registry import provider_class

    kind = settings.profile(provider or settings.default_provider).provider
    honoured = provider_class(kind).launch_flags
    names = {"type": "instance_type", "region": "region", "spot": "spot", "disk_gb": "disk_gb"}
    return {k: v for k, v in given.items() if k in names and names[k] in honoured}


def pick_mode(
    found: Project | None,
    name: str | None,
    command: str | None,
    overrides: Sequence[str],
    base: str | None,
) -> Mode | None:
    """The project mode (or ad-hoc command) a launch names; None: a bundled preset."""
    if command is not None:
        if not command.strip():
            raise ConfigError("--command is empty", hint='e.g. --command "python train.py"')
        if name:
            raise ConfigError(
                f"give a mode or preset ('{name}') or --command, not both",
                hint="drop one of them",
            )
        if overrides or base:
            raise ConfigError("--set and --base change the bundled trainer, not a --command")
        return Mode(project.COMMAND_MODE, "ad-hoc command", command=command.strip())
    if not name:
        raise ConfigError(
            "name a preset or a mode of your project, or pass --command",
            hint="e.g. gpuctl run validate; `gpuctl presets` lists them",
        )
    mode = found.mode(name) if found is not None else None
    if mode is not None and mode.command and (overrides or base):
        raise ConfigError(
            f"--set and --base change the bundled trainer; mode '{name}' runs your command",
            hint=f"edit [modes.{name}] command in {found.file if found else 'gpuctl.toml'}",
        )
    if mode is None and found is not None:
        from gpuctl.presets.loader import CUSTOM, load_all

        known = [*found.modes, *load_all(), CUSTOM]
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(
                f"unknown mode or preset '{name}'",
                hint=(f"did you mean '{close[0]}'? " if close else "")
                + f"modes in {found.file}: {', '.join(found.modes)}; "
                "presets: `gpuctl presets`",
            )
    return mode


def resolve_preset_overrides(chosen: Preset, mode: Mode, overrides: Sequence[str]) -> Preset:
    """A preset mode: the bundled trainer with the mode's [train] and the --set values."""
    from dataclasses import replace

    from gpuctl.presets.loader import parse_overrides
    from gpuctl.trainer import config as train_config

    train = {**chosen.train, **mode.train, **parse_overrides(overrides)}
    try:
        train_config.validate(train)
    except train_config.ConfigError as exc:
        raise ConfigError(f"mode '{mode.name}': {exc}", hint="check [train] and --set") from None
    return replace(chosen, name=mode.name, description=mode.description, train=train)


def command_preset(mode: Mode, settings: Settings) -> Preset:
    """The limits of a command mode, from the mode and config.toml's defaults."""
    from gpuctl.presets.loader import Preset

    train: dict[str, Any] = {"epochs": mode.epochs} if mode.epochs else {}
    return Preset(
        name=mode.name,
        description=mode.description or (mode.command or ""),
        train=train,
        max_hours=settings.max_hours,
        idle_minutes=settings.idle_minutes,
        source="gpuctl.toml",
    )


def command_job(found: Project | None, mode: Mode) -> dict[str, Any]:
    """What the machine needs to run the user's command like the bundled trainer: how to
    resume it, its checkpoint, setup, data, outputs, environment. Secrets by name only."""

    job: dict[str, Any] = {"kind": "command", "command": mode.command, "mode": mode.name}
    if mode.epochs:
        job["epochs"] = mode.epochs
    if found is None:
        return job
    for source in found.data:
        source.check_present()
    project.secret_values(found.secrets, str(found.file))  # values are read again at start
    job.update(
        project=found.name,
        project_file=str(found.file),
        checkpoint=found.checkpoint,
        resume=found.resume,
        setup=list(found.setup),
        setup_key=found.setup_key() if found.setup else "",
        data=[d.to_dict() for d in found.data],
        outputs=list(found.outputs),
        env=dict(found.env),
        secrets=list(found.secrets),
    )
    if found.grace_seconds is not None:
        job["grace_seconds"] = found.grace_seconds
    return job
