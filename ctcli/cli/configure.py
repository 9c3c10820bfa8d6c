"""`ctcli configure`: write, list and check credential profiles.

Write mode asks for what the flags did not give only when stdin is a terminal; scripts get a
one-line error naming the flag instead of a prompt that would hang. The passcode never comes
from a flag value (shell history, `ps`): it is read from a hidden prompt or `--passcode-stdin`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ctcli.cli.environment import environment_of
from ctcli.cli.exits import INTERRUPTED

if TYPE_CHECKING:
    from ctcli.config import Profile
from ctcli.errors import (
    ConfigError,
    CredentialsRejected,
    Unreachable,
    UsageError,
)


class _LazyConfig:
    """ctcli.config, imported on first use: `ctcli --version` and `--help` never need it."""

    def __getattr__(self, name: str) -> Any:
        from ctcli import config as module

        return getattr(module, name)


config = _LazyConfig()

CHECK_TIMEOUT = 10.0


def _message(text: str) -> None:
    typer.echo(text, err=True)


def _printable(value: str) -> str:
    # Values from the file are shown verbatim unless they could drive the terminal.
    if value.isprintable():
        return value
    return value.encode("unicode_escape").decode("ascii")


def configure(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Profile to write, list or check (env CTCLI_PROFILE, default 'default').",
            show_default=False,
        ),
    ] = None,
    project_id: Annotated[
        str | None,
        typer.Option("--project-id", help="CleverTap project (account) id.", show_default=False),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            help="eu1 in1 us1 sg1 aps3 mec1 sk1, or EU IN US SG (default eu1 for a new profile).",
            show_default=False,
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="Base URL that overrides the region (a proxy, the sandbox); '' removes it.",
            show_default=False,
        ),
    ] = None,
    passcode_stdin: Annotated[
        bool,
        typer.Option(
            "--passcode-stdin", help="Read the passcode from the first line of standard input."
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Ask CleverTap whether it accepts the credentials; when writing, before saving "
            "(refused credentials are not saved).",
        ),
    ] = False,
    remove: Annotated[
        bool,
        typer.Option("--remove", help="Remove the profile from the config file."),
    ] = False,
    list_profiles: Annotated[
        bool,
        typer.Option(
            "--list", help="Show the profiles, passcodes masked, and where each value comes from."
        ),
    ] = False,
) -> None:
    """Create or update a credential profile, list profiles, or check credentials.

    Without --list or --check this writes a profile: values not given as flags are asked for
    when stdin is a terminal. The config file is $CTCLI_CONFIG, else
    $XDG_CONFIG_HOME/ctcli/config.toml, else ~/.config/ctcli/config.toml (mode 0600).
    """
    environment = environment_of(ctx)
    env = environment.variables
    path = config.config_path(env)
    # Before any warning or prompt: a file ctcli will not use gets one line, and nothing else.
    config.check_config_file(path, env)
    writes = any(v is not None for v in (project_id, region, endpoint)) or passcode_stdin

    if remove:
        if writes or check or list_profiles:
            raise UsageError("--remove cannot be combined with other options but --profile")
        name = _profile_name(profile, env)
        if not config.remove_profile(path, name, env):
            raise ConfigError(f"no profile {name!r} in {path}: nothing removed")
        _message(f"Removed profile {name!r} from {path}")
        return

    if list_profiles:
        if writes or check:
            raise UsageError("--list cannot be combined with --check or with values to write")
        _warn_permissions(path)
        _list(path, profile, env)
        return

    if writes or not check:
        _write(
            path, profile, env, project_id, region, endpoint, passcode_stdin,
            interactive=environment.stdin_isatty, check_first=check,
        )  # fmt: skip
        return
    _warn_permissions(path)
    _check(path, profile, env, project_id, region, endpoint)


def _warn_permissions(path: Path) -> None:
    warning = config.permission_warning(path)
    if warning:
        _message(f"ctcli: warning: {warning}")


def _profile_name(profile: str | None, env: Mapping[str, str]) -> str:
    name = (profile or "").strip() or env.get(config.ENV_PROFILE, "").strip()
    return config.validate_profile_name(name or config.DEFAULT_PROFILE)


def _write(
    path: Path,
    profile: str | None,
    env: Mapping[str, str],
    project_id: str | None,
    region: str | None,
    endpoint: str | None,
    passcode_stdin: bool,
    *,
    interactive: bool,
    check_first: bool = False,
) -> str:
    name = _profile_name(profile, env)
    exposed = config.permission_warning(path) is not None
    current = config.profiles_in(config.load_config(path, env)).get(name, {})

    # Validate flags before asking anything, so a typo does not cost a round of prompts.
    new_region = config.normalize_region(region) if region is not None else None
    if endpoint is not None:
        new_endpoint = config.normalize_endpoint(endpoint) if endpoint.strip() else None
    else:
        new_endpoint = current.get("endpoint")

    passcode = _read_passcode_stdin(interactive) if passcode_stdin else None
    new_project_id = (project_id or "").strip() or None
    current_project_id = current.get("project_id") or None
    current_passcode = current.get("passcode") or None
    current_region = current.get("region") or config.DEFAULT_REGION

    if interactive:
        if new_project_id is None:
            new_project_id = _ask_project_id(current_project_id)
        if new_region is None:
            new_region = _ask_region(current_region)
        if passcode is None:
            passcode = _ask_passcode(current_passcode)
    else:
        new_project_id = new_project_id or current_project_id
        passcode = passcode or current_passcode
        _require_given(new_project_id, passcode)
    assert new_project_id is not None and passcode is not None  # for the type checker
    final_region = new_region or config.normalize_region(current_region)
    if check_first:
        candidate = config.Profile(
            name=name,
            project_id=new_project_id,
            passcode=passcode,
            region=final_region,
            endpoint=new_endpoint,
            origins={"project_id": "flag", "passcode": "flag", "region": "flag"},
        )
        try:
            _check_profile(candidate)
        except (CredentialsRejected, Unreachable) as exc:
            raise type(exc)(f"{exc}; nothing saved") from None

    config.save_profile(
        path,
        name,
        project_id=new_project_id,
        passcode=passcode,
        region=final_region,
        endpoint=new_endpoint,
        env=env,
    )
    _message(f"Saved profile {name!r} to {path}")
    if exposed:
        _message(
            f"ctcli: warning: {path} was readable by group or others before; it is now mode 0600"
        )
    overriding = [var for var in config.SETTING_ENV.values() if env.get(var, "").strip()]
    if overriding:
        _message(
            f"ctcli: note: {', '.join(overriding)} set in the environment "
            "override the values of every profile"
        )
    return name


def _require_given(project_id: str | None, passcode: str | None) -> None:
    missing = []
    if not project_id:
        missing.append(("project id", "--project-id"))
    if not passcode:
        missing.append(("passcode", "--passcode-stdin"))
    if missing:
        what = " or ".join(label for label, _ in missing)
        flags = " and ".join(flag for _, flag in missing)
        raise ConfigError(
            f"no {what} given: use {flags} (stdin is not a terminal, so ctcli cannot ask)"
        )


def _read_passcode_stdin(interactive: bool) -> str:
    if interactive:
        # Reading a terminal line would echo the secret; a hidden prompt reads the same thing.
        return _ask_passcode(None)
    line = sys.stdin.readline().strip()
    if not line:
        raise ConfigError(
            "no passcode on stdin: --passcode-stdin reads it from the first line of standard input"
        )
    return line


def _prompt(text: str, **options: Any) -> str:
    """Ask on stderr (stdout stays clean); Ctrl-C or Ctrl-D ends the command, nothing saved."""
    try:
        return str(typer.prompt(text, err=True, **options))
    except typer.Abort:
        _message("\nctcli: interrupted: nothing saved")
        raise typer.Exit(int(INTERRUPTED)) from None


def _ask_project_id(current: str | None) -> str:
    while True:
        answer = _prompt("Project ID", default=current).strip()
        if answer:
            return answer


def _ask_region(current: str) -> str:
    codes = " ".join(config.REGIONS)
    while True:
        answer = _prompt(f"Region ({codes})", default=current)
        try:
            return config.normalize_region(answer)
        except ConfigError as exc:
            _message(f"ctcli: {exc}")


def _ask_passcode(current: str | None) -> str:
    label = "Passcode"
    if current:
        label = f"Passcode [{config.mask_secret(current)}, Enter keeps it]"
    while True:
        answer = _prompt(label, default="", show_default=False, hide_input=True).strip()
        if answer:
            return answer
        if current:
            return current
        _message("ctcli: a passcode is required (input is hidden)")


def _check(
    path: Path,
    name: str | None,
    env: Mapping[str, str],
    project_id: str | None,
    region: str | None,
    endpoint: str | None,
) -> None:
    resolved = config.resolve_profile(
        name, project_id=project_id, region=region, endpoint=endpoint, env=env, path=path
    )
    _check_profile(resolved)


def _check_profile(resolved: Profile) -> None:
    """Ask CleverTap whether it takes `resolved`'s credentials; say so, or raise why not."""
    resolved.require_credentials()
    from ctcli.delivery.client import check_credentials

    base_url = config.redact_url(resolved.base_url)  # shown, never a proxy's password
    assert resolved.project_id is not None and resolved.passcode is not None
    try:
        check_credentials(base_url, resolved.project_id, resolved.passcode, timeout=CHECK_TIMEOUT)
    except CredentialsRejected as exc:
        raise CredentialsRejected(f"{exc} at {base_url} ({_fix_hint(resolved)})") from None
    except Unreachable as exc:
        raise Unreachable(f"could not check the credentials: {exc}") from None
    typer.echo(f"Credentials accepted by {base_url} ({resolved.project_id})")


def _fix_hint(resolved: Profile) -> str:
    from_env = [
        config.SETTING_ENV[key]
        for key in ("project_id", "passcode")
        if resolved.origins.get(key) == "env"
    ]
    if from_env:
        return f"check {' and '.join(from_env)}"
    return f"profile {resolved.name!r}; fix it with 'ctcli configure --profile {resolved.name}'"


def _list(path: Path, profile: str | None, env: Mapping[str, str]) -> None:
    profiles = config.profiles_in(config.load_config(path, env))
    active = (profile or "").strip() or env.get(config.ENV_PROFILE, "").strip() or "default"
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"no profile {profile!r} in {path} (profiles there: {known})")
        profiles = {profile: profiles[profile]}
    env_values = {
        key: env[var] for key, var in config.SETTING_ENV.items() if env.get(var, "").strip()
    }
    if not profiles and not env_values:
        _message(
            f"No profiles in {path}. Create one with: ctcli configure --profile default "
            "(or set CLEVERTAP_PROJECT_ID and CLEVERTAP_PASSCODE)"
        )
        return

    blocks: list[tuple[str, list[tuple[str, str, str]]]] = []
    for profile_name, table in profiles.items():
        marker = " (active)" if profile_name == active else ""
        blocks.append((f"profile {profile_name!r}{marker}", _file_rows(table)))
    if env_values:
        blocks.append(("environment (overrides every profile)", _env_rows(env_values)))
    effective = _effective(path, active, env)
    if effective is not None:
        blocks.append(effective)

    width = max(len(value) for _, rows in blocks for _, value, _ in rows)
    lines = [f"config file: {path}"]
    for title, rows in blocks:
        lines.append(_printable(title))
        lines += [f"  {key:<14} {value:<{width}}  {origin}".rstrip() for key, value, origin in rows]
    typer.echo("\n".join(lines))


def _effective(
    path: Path, name: str, env: Mapping[str, str]
) -> tuple[str, list[tuple[str, str, str]]] | None:
    """What a command run with profile `name` would use, each value with where it came from."""
    try:
        resolved = config.resolve_profile(name, env=env, path=path)
    except ConfigError:
        return None
    rows = [
        (key, _show(key, getattr(resolved, key)), resolved.origins.get(key, ""))
        for key in ("project_id", "passcode", "region", "endpoint")
    ]
    sends_to = config.redact_url(resolved.base_url)
    why = f"the endpoint overrides region {resolved.region}" if resolved.endpoint else "the region"
    rows.append(("sends to", _printable(sends_to), why))
    return f"effective for profile {name!r} (flags > environment > file)", rows


def _show(key: str, value: str | None) -> str:
    if key == "passcode":
        return config.mask_secret(value)
    if value is None:
        return "(not set)"
    if key == "region":
        try:
            return config.normalize_region(value)
        except ConfigError:
            return f"{_printable(value)} (invalid)"
    if key == "endpoint":
        return _printable(config.redact_url(value))
    return _printable(value)


def _file_rows(table: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for key in config.SETTING_ENV:
        value = table.get(key)
        if value is None and key == "region":
            rows.append((key, config.DEFAULT_REGION, "default"))
        else:
            rows.append((key, _show(key, value), "file" if value is not None else "-"))
    subscriptions = table.get("subscriptions", [])
    if subscriptions:
        rows.append(("subscriptions", str(len(subscriptions)), "file"))
    return rows


def _env_rows(values: Mapping[str, str]) -> list[tuple[str, str, str]]:
    return [
        (key, _show(key, value.strip()), f"env {config.SETTING_ENV[key]}")
        for key, value in values.items()
    ]
