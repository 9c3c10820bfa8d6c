"""Credential profiles: find, load and save the config file, and resolve flag > env > file.

Every command resolves its settings through `resolve_profile`, so precedence, validation and
error wording are the same everywhere. The passcode is treated as a secret throughout: it is
never part of a repr, an error message or a warning.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ctcli.errors import ConfigError

REGIONS: dict[str, str] = {
    "eu1": "https://eu1.api.clevertap.com",
    "in1": "https://in1.api.clevertap.com",
    "us1": "https://us1.api.clevertap.com",
    "sg1": "https://sg1.api.clevertap.com",
    "aps3": "https://aps3.api.clevertap.com",
    "mec1": "https://mec1.api.clevertap.com",
    "sk1": "https://sk1.api.clevertap.com",
}

# The names Segment's settings page uses; kept so a value copied from there just works.
REGION_ALIASES: dict[str, str] = {"eu": "eu1", "in": "in1", "us": "us1", "sg": "sg1"}

DEFAULT_REGION = "eu1"
DEFAULT_PROFILE = "default"

ENV_PROJECT_ID = "CLEVERTAP_PROJECT_ID"
ENV_PASSCODE = "CLEVERTAP_PASSCODE"
ENV_REGION = "CLEVERTAP_REGION"
ENV_ENDPOINT = "CLEVERTAP_ENDPOINT"
ENV_PROFILE = "CTCLI_PROFILE"
ENV_CONFIG = "CTCLI_CONFIG"
# Set to "1" to use a config file that others could have written (group/other-writable, or
# owned by another user): the passcode would then go wherever that file says.
ENV_ALLOW_INSECURE_CONFIG = "CTCLI_ALLOW_INSECURE_CONFIG"

# Setting name -> environment variable, in the order they are shown to users.
SETTING_ENV: dict[str, str] = {
    "project_id": ENV_PROJECT_ID,
    "passcode": ENV_PASSCODE,
    "region": ENV_REGION,
    "endpoint": ENV_ENDPOINT,
}

_STRING_KEYS = tuple(SETTING_ENV)
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MASK = "*" * 16


def _region_names() -> str:
    aliases = ", ".join(alias.upper() for alias in REGION_ALIASES)
    return f"{', '.join(REGIONS)} (or {aliases})"


def normalize_region(value: str) -> str:
    """Return the region code for a code or alias in any case ("IN", "In1" -> "in1")."""
    key = value.strip().lower()
    key = REGION_ALIASES.get(key, key)
    if key in REGIONS:
        return key
    raise ConfigError(f"unknown region {value!r}: use one of {_region_names()}")


def normalize_endpoint(value: str) -> str:
    """Return an http(s) base URL without its trailing slash, or raise ConfigError."""
    url = value.strip().rstrip("/")
    shown = redact_url(value)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError as exc:
        raise ConfigError(f"invalid endpoint {shown!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"invalid endpoint {shown!r}: give an http:// or https:// base URL, "
            "e.g. http://127.0.0.1:8080"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"invalid endpoint {shown!r}: a base URL has no query or fragment")
    return url


def validate_header_value(what: str, value: str) -> str:
    """Return `value` if it can travel in an HTTP header, else raise ConfigError.

    Checked before any request because HTTP libraries quote a bad header value in their error
    message, and for the passcode that message would leak the secret.
    """
    if not value or not all(" " < char < "\x7f" for char in value):
        raise ConfigError(
            f"the {what} must be printable ASCII without spaces "
            "(it travels in an HTTP header); check for stray characters"
        )
    return value


def validate_profile_name(name: str) -> str:
    """Return `name` if it is usable as a profile name (letters, digits, - _ .), else raise."""
    if not _PROFILE_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid profile name {name!r}: use letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the config file lives: $CTCLI_CONFIG, $XDG_CONFIG_HOME/ctcli, or ~/.config/ctcli."""
    explicit = env.get(ENV_CONFIG, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "ctcli" / "config.toml"
    home = env.get("HOME", "").strip()
    base = Path(home) if home else Path.home()
    return base / ".config" / "ctcli" / "config.toml"


def mask_secret(value: str | None) -> str:
    """Mask a secret for display: a fixed-width mask plus at most its last 4 characters.

    Short secrets show fewer characters (never more than a third of the secret), and the mask
    width does not depend on the secret's length, so the output reveals neither.
    """
    if value is None:
        return "(not set)"
    if value == "":
        return "(empty)"
    shown = min(4, len(value) // 3)
    return _MASK + (value[-shown:] if shown else "")


@dataclass(frozen=True)
class Profile:
    """The settings one command runs with, and where each of them came from."""

    name: str
    project_id: str | None = None
    passcode: str | None = field(default=None, repr=False)
    region: str = DEFAULT_REGION
    endpoint: str | None = None
    subscriptions: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    # For project_id, passcode, region, endpoint: "flag" | "env" | "file" | "default" | "unset".
    origins: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __repr__(self) -> str:
        # Written by hand so that no future field change can put the passcode into a log line.
        passcode = "set" if self.passcode else "unset"
        return (
            f"Profile(name={self.name!r}, project_id={self.project_id!r}, passcode=<{passcode}>, "
            f"region={self.region!r}, endpoint={self.endpoint!r}, "
            f"subscriptions=<{len(self.subscriptions)}>)"
        )

    __str__ = __repr__

    @property
    def base_url(self) -> str:
        """The API base URL: the endpoint when one is set, else the region's URL."""
        if self.endpoint:
            return self.endpoint.rstrip("/")
        return REGIONS[self.region]

    def require_credentials(self) -> None:
        """Raise ConfigError naming what is missing (project id, passcode) and how to set it."""
        missing = [
            (label, SETTING_ENV[key])
            for key, label in (("project_id", "project id"), ("passcode", "passcode"))
            if not getattr(self, key)
        ]
        if not missing:
            validate_header_value("project id", self.project_id or "")
            validate_header_value("passcode", self.passcode or "")
            return
        what = " and ".join(label for label, _ in missing)
        how_env = " and ".join(env for _, env in missing)
        raise ConfigError(
            f"no {what} for profile {self.name!r}: run 'ctcli configure --profile {self.name}' "
            f"or set {how_env}"
        )


@dataclass(frozen=True)
class Credentials:
    """An account given directly (a library call, a sandbox), in place of a profile's.

    `endpoint` and `region` are optional, as in a profile; None keeps the profile's.
    """

    project_id: str
    passcode: str = field(repr=False)
    region: str | None = None
    endpoint: str | None = None

    def __repr__(self) -> str:
        return (
            f"Credentials(project_id={self.project_id!r}, passcode=<set>, "
            f"region={self.region!r}, endpoint={self.endpoint and redact_url(self.endpoint)!r})"
        )

    def apply_to(self, profile: Profile) -> Profile:
        """`profile` with this account: its subscriptions kept, the credentials replaced."""
        origins = dict(profile.origins, project_id="flag", passcode="flag")
        region = profile.region
        if self.region is not None:
            region, origins["region"] = normalize_region(self.region), "flag"
        endpoint = profile.endpoint
        if self.endpoint is not None:
            endpoint, origins["endpoint"] = normalize_endpoint(self.endpoint), "flag"
        return replace(
            profile,
            project_id=self.project_id,
            passcode=self.passcode,
            region=region,
            endpoint=endpoint,
            origins=MappingProxyType(origins),
        )


def _check_profile_table(path: Path, name: str, table: object) -> None:
    where = f"config file {path}: profile {name!r}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([profiles.{name}])")
    for key in _STRING_KEYS:
        if key in table and not isinstance(table[key], str):
            # The value itself is not echoed: it might be the passcode.
            raise ConfigError(f"{where}: {key} must be a string, not {type(table[key]).__name__}")
    subscriptions = table.get("subscriptions", [])
    if not isinstance(subscriptions, list) or not all(isinstance(s, dict) for s in subscriptions):
        raise ConfigError(
            f"{where}: subscriptions must be an array of tables ([[profiles.{name}.subscriptions]])"
        )


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind_of(mode: int) -> str:
    for is_kind, kind in _FILE_KINDS:
        if is_kind(mode):
            return kind
    return "not a regular file"


def _require_regular(path: Path, info: os.stat_result) -> None:
    # Reading a FIFO blocks, and replacing a device or a socket destroys it: only a regular
    # file is ever read or replaced.
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(
            f"config file {path} is {_kind_of(info.st_mode)}, not a regular file: "
            f"point {ENV_CONFIG} at a regular file"
        )


def _stat_config(path: Path) -> os.stat_result | None:
    """The config file's status (through a symlink), None when it is absent; raises
    ConfigError when it is not a regular file. Never opens it, so it cannot block."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    _require_regular(path, info)
    return info


def _foreign_owner(info: os.stat_result) -> bool:
    # As ssh does: root may own the file too (root can change anything of the user's anyway).
    return info.st_uid not in (os.getuid(), 0)


def insecurity(path: Path, info: os.stat_result) -> str | None:
    """Why others could have changed the config file (and so where the passcode goes):
    owned by another user, or writable by group or others; None when neither."""
    if _foreign_owner(info):
        return (
            f"config file {path} is owned by another user (uid {info.st_uid}), who could change "
            f"where the passcode is sent: run 'chown {os.getuid()} {path}' or move it away"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return (
            f"config file {path} is writable by group or others (mode {mode:04o}), who could "
            f"change where the passcode is sent: check it, then run 'chmod 600 {path}'"
        )
    return None


def _insecure_allowed(env: Mapping[str, str]) -> bool:
    return env.get(ENV_ALLOW_INSECURE_CONFIG, "").strip() == "1"


def _require_trusted(path: Path, info: os.stat_result, env: Mapping[str, str]) -> None:
    reason = insecurity(path, info)
    if reason and not _insecure_allowed(env):
        raise ConfigError(reason)


def check_config_file(path: Path, env: Mapping[str, str] = os.environ) -> None:
    """Raise ConfigError unless the config file is absent, or a regular file that only its
    owner can change ($CTCLI_ALLOW_INSECURE_CONFIG=1 lifts the second condition)."""
    info = _stat_config(path)
    if info is not None:
        _require_trusted(path, info, env)


def _read_config_bytes(path: Path, env: Mapping[str, str]) -> bytes | None:
    """The config file's bytes, None when absent, after the checks of `check_config_file`."""
    if _stat_config(path) is None:
        return None
    try:
        # O_NONBLOCK: if a FIFO took the file's place since the stat, opening it cannot hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        # Checked again on what was opened: that is what is read, whatever the path names now.
        info = os.fstat(handle.fileno())
        _require_regular(path, info)
        _require_trusted(path, info, env)
        try:
            return handle.read()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def load_config(path: Path, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Read and structurally check the config file; {} when it does not exist.

    Refused (ConfigError): anything but a regular file, and a file others could have changed
    (see `check_config_file`).
    """
    raw = _read_config_bytes(path, env)
    if raw is None:
        return {}
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML: not UTF-8 ({exc.reason})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"config file {path}: 'profiles' must be a table ([profiles.NAME])")
    for name, table in profiles.items():
        _check_profile_table(path, name, table)
    return data


def profiles_in(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The profile tables of a loaded config, by name (empty when there are none)."""
    return dict(data.get("profiles", {}))


def _nonempty(value: str | None) -> str | None:
    # An empty or blank value anywhere means "not set", so `VAR= ctcli ...` falls through.
    if value is None:
        return None
    value = value.strip()
    return value or None


def _pick(
    key: str, flag: str | None, env: Mapping[str, str], table: Mapping[str, Any]
) -> tuple[str | None, str]:
    for value, origin in (
        (flag, "flag"),
        (env.get(SETTING_ENV[key]), "env"),
        (table.get(key), "file"),
    ):
        value = _nonempty(value)
        if value is not None:
            return value, origin
    return None, "unset"


def _source(key: str, origin: str, name: str, path: Path) -> str:
    if origin == "flag":
        return f"--{key.replace('_', '-')}"
    if origin == "env":
        return SETTING_ENV[key]
    return f"profile {name!r} in {path}"


def resolve_profile(
    name: str | None = None,
    *,
    project_id: str | None = None,
    region: str | None = None,
    endpoint: str | None = None,
    env: Mapping[str, str] = os.environ,
    path: Path | None = None,
) -> Profile:
    """Resolve the settings a command runs with: flag > environment > profile file.

    The profile is `name`, else $CTCLI_PROFILE, else "default". A profile that the file lacks
    is fine when nothing names it explicitly, or when the environment (and flags) supply both
    the project id and the passcode; otherwise it is a ConfigError listing the profiles there are.
    Missing credentials are not an error here (dry runs need none): see `require_credentials`.
    """
    explicit = _nonempty(name) or _nonempty(env.get(ENV_PROFILE))
    profile_name = explicit or DEFAULT_PROFILE
    path = path if path is not None else config_path(env)
    data = load_config(path, env)
    profiles = profiles_in(data)
    table = profiles.get(profile_name, {})

    values: dict[str, str | None] = {}
    origins: dict[str, str] = {}
    flags = {"project_id": project_id, "passcode": None, "region": region, "endpoint": endpoint}
    for key in _STRING_KEYS:
        values[key], origins[key] = _pick(key, flags[key], env, table)

    if explicit and profile_name not in profiles and path.is_file():
        outside_file = origins["project_id"] in ("flag", "env") and origins["passcode"] == "env"
        if not outside_file:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(
                f"no profile {profile_name!r} in {path} (profiles there: {known}); "
                f"create it with 'ctcli configure --profile {profile_name}'"
            )

    region_value = values["region"]
    if region_value is None:
        resolved_region, origins["region"] = DEFAULT_REGION, "default"
    else:
        try:
            resolved_region = normalize_region(region_value)
        except ConfigError as exc:
            source = _source("region", origins["region"], profile_name, path)
            raise ConfigError(f"{exc} (from {source})") from None

    endpoint_value = values["endpoint"]
    if endpoint_value is not None:
        try:
            endpoint_value = normalize_endpoint(endpoint_value)
        except ConfigError as exc:
            source = _source("endpoint", origins["endpoint"], profile_name, path)
            raise ConfigError(f"{exc} (from {source})") from None

    return Profile(
        name=profile_name,
        project_id=values["project_id"],
        passcode=values["passcode"],
        region=resolved_region,
        endpoint=endpoint_value,
        subscriptions=tuple(table.get("subscriptions", ())),
        origins=MappingProxyType(origins),
    )


def permission_warning(path: Path) -> str | None:
    """A one-line warning when group or others can read or write the existing regular file at
    `path`, or another user owns it; None when it is private, absent or not a regular file
    (`load_config` refuses that). Callers add their own prefix ("ctcli: warning: ")."""
    try:
        info = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if _foreign_owner(info):
        return (
            f"config file {path} is owned by another user (uid {info.st_uid}) and holds "
            f"passcodes: run 'chown {os.getuid()} {path}'"
        )
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o066:
        return None
    return (
        f"config file {path} is accessible by group or others "
        f"(mode {mode:04o}) and holds passcodes: run 'chmod 600 {path}'"
    )


def _write_private(path: Path, content: bytes) -> None:
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
        # mkdir's mode is filtered by the umask; the directory must not be listable by others.
        os.chmod(parent, 0o700)
    # mkstemp creates the file 0600 from the first moment, so no other user can ever open it.
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            os.fchmod(tmp.fileno(), 0o600)
            tmp.write(content)
            tmp.flush()
            os.fsync(tmp.fileno())
        _stat_config(path)  # still a regular file or absent: never replace a device or a FIFO
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open a directory, which is fine.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_profile(
    path: Path,
    name: str,
    *,
    project_id: str,
    passcode: str,
    region: str,
    endpoint: str | None,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Create or update profile `name` in the config file, atomically and with mode 0600.

    Other profiles, and this profile's subscriptions and other keys, are kept. An endpoint of
    None removes the profile's endpoint. A file `load_config` refuses is left as it is.
    """
    validate_profile_name(name)
    validate_header_value("project id", project_id)
    validate_header_value("passcode", passcode)
    region = normalize_region(region)
    endpoint = normalize_endpoint(endpoint) if endpoint else None
    values: dict[str, str | None] = {
        "project_id": project_id,
        "passcode": passcode,
        "region": region,
        "endpoint": endpoint,
    }
    _edit_config(path, env, lambda document: _set_profile(document, name, values))


def remove_profile(path: Path, name: str, env: Mapping[str, str] = os.environ) -> bool:
    """Remove profile `name` from the config file (the rest kept as written); False if absent."""
    validate_profile_name(name)
    found = name in profiles_in(load_config(path, env))
    if found:
        _edit_config(path, env, lambda document: document["profiles"].pop(name))
    return found


def _set_profile(document: Any, name: str, values: Mapping[str, str | None]) -> None:
    import tomlkit

    if "profiles" not in document:
        document.add("profiles", tomlkit.table(is_super_table=True))
    profiles = document["profiles"]
    if name not in profiles:
        profiles.add(name, tomlkit.table())
    table = profiles[name]
    for key, value in values.items():
        if value is not None:
            table[key] = value  # an existing key keeps its place and its comment
        elif key in table:
            del table[key]


def _edit_config(path: Path, env: Mapping[str, str], edit: Any) -> None:
    """Apply `edit` to the config file's document and write it back, as written but for that.

    tomlkit keeps comments, key order, blank lines and `[[...]]` tables of a hand-edited file.
    """
    import tomlkit

    # Write to the file a symlink points at, so dotfile managers keep their link.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    load_config(target, env)  # refuses what ctcli would refuse to read
    raw = _read_config_bytes(target, env)
    document = tomlkit.parse(raw.decode("utf-8")) if raw else tomlkit.document()
    edit(document)
    content = tomlkit.dumps(document).encode("utf-8")
    try:
        _write_private(target, content)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {path}: {exc.strerror or exc}") from None


# scheme://userinfo@ : everything between the scheme and the last @ before the path.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")


def redact_url(url: str) -> str:
    """`url` with any user:password@ part masked, for display; never fails, however odd."""
    match = _USERINFO.match(url)
    if match is None:
        return url
    user, colon, _password = match.group(2).partition(":")
    # Without a password the user part may be a token itself: it is masked whole.
    shown = f"{user}:****" if colon else "****"
    return f"{match.group(1)}{shown}@{url[match.end() :]}"
