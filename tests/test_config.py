"""Credential profiles: where the file is, flag > env > file, safe saving, masking."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctcli import config
from ctcli.config import (
    REGIONS,
    Profile,
    config_path,
    load_config,
    mask_secret,
    normalize_region,
    permission_warning,
    resolve_profile,
    save_profile,
)
from ctcli.errors import ConfigError

SECRET = "SENTINEL-PASSCODE-7731"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.toml",
        """
[profiles.default]
project_id = "FILE-ID"
passcode = "file-passcode"
region = "in1"

[profiles.proxy]
project_id = "PROXY-ID"
passcode = "proxy-passcode"
region = "us1"
endpoint = "http://127.0.0.1:9999/"

[[profiles.proxy.subscriptions]]
trigger = 'type = "track" and event = "Account Closed"'
action = "delete"
""",
    )


# --- where the file is --------------------------------------------------------------------


def test_config_path_prefers_ctcli_config() -> None:
    env = {"CTCLI_CONFIG": "/x/c.toml", "XDG_CONFIG_HOME": "/xdg", "HOME": "/home/u"}
    assert config_path(env) == Path("/x/c.toml")


def test_config_path_uses_xdg_config_home_next() -> None:
    env = {"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/u"}
    assert config_path(env) == Path("/xdg/ctcli/config.toml")


def test_config_path_falls_back_to_dot_config_in_home() -> None:
    assert config_path({"HOME": "/home/u"}) == Path("/home/u/.config/ctcli/config.toml")


def test_config_path_ignores_a_relative_xdg_config_home() -> None:
    env = {"XDG_CONFIG_HOME": "relative", "HOME": "/home/u"}
    assert config_path(env) == Path("/home/u/.config/ctcli/config.toml")


# --- regions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("IN", "in1"),
        ("in", "in1"),
        ("In1", "in1"),
        ("eu", "eu1"),
        ("US", "us1"),
        ("sg", "sg1"),
        ("APS3", "aps3"),
        ("mec1", "mec1"),
        ("Sk1", "sk1"),
        (" in1 ", "in1"),
    ],
)
def test_region_codes_and_aliases_are_accepted_in_any_case(given: str, code: str) -> None:
    assert normalize_region(given) == code


def test_every_region_has_an_https_clevertap_url() -> None:
    assert set(REGIONS) == {"eu1", "in1", "us1", "sg1", "aps3", "mec1", "sk1"}
    assert REGIONS["in1"] == "https://in1.api.clevertap.com"
    assert all(url.startswith("https://") for url in REGIONS.values())


def test_unknown_region_is_one_line_listing_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_region("mars")
    message = str(info.value)
    assert "\n" not in message
    assert "'mars'" in message
    for name in ("eu1", "in1", "us1", "sg1", "aps3", "mec1", "sk1", "EU", "IN", "US", "SG"):
        assert name in message


# --- precedence ------------------------------------------------------------------------------

FILE = "file"
ENV = "env"
FLAG = "flag"


@pytest.mark.parametrize(
    ("setting", "layers", "expected", "origin"),
    [
        ("project_id", [FILE], "FILE-ID", "file"),
        ("project_id", [FILE, ENV], "ENV-ID", "env"),
        ("project_id", [FILE, ENV, FLAG], "FLAG-ID", "flag"),
        ("project_id", [FILE, FLAG], "FLAG-ID", "flag"),
        ("project_id", [ENV], "ENV-ID", "env"),
        ("project_id", [], None, "unset"),
        ("passcode", [FILE], "file-passcode", "file"),
        ("passcode", [FILE, ENV], "env-passcode", "env"),
        ("passcode", [], None, "unset"),
        ("region", [FILE], "in1", "file"),
        ("region", [FILE, ENV], "us1", "env"),
        ("region", [FILE, ENV, FLAG], "sg1", "flag"),
        ("region", [FILE, FLAG], "sg1", "flag"),
        ("region", [], "eu1", "default"),
        ("endpoint", [FILE], "http://file.test", "file"),
        ("endpoint", [FILE, ENV], "http://env.test", "env"),
        ("endpoint", [FILE, ENV, FLAG], "http://flag.test", "flag"),
        ("endpoint", [], None, "unset"),
    ],
)
def test_each_setting_takes_flag_over_env_over_file(
    tmp_path: Path, setting: str, layers: list[str], expected: str | None, origin: str
) -> None:
    file_values = {
        "project_id": "FILE-ID",
        "passcode": "file-passcode",
        "region": "in1",
        "endpoint": "http://file.test",
    }
    env_values = {
        "project_id": "ENV-ID",
        "passcode": "env-passcode",
        "region": "US",
        "endpoint": "http://env.test",
    }
    flag_values = {"project_id": "FLAG-ID", "region": "SG", "endpoint": "http://flag.test"}
    path = tmp_path / "config.toml"
    table = f'{setting} = "{file_values[setting]}"\n' if FILE in layers else ""
    write_config(path, f"[profiles.default]\n{table}")
    env = {config.SETTING_ENV[setting]: env_values[setting]} if ENV in layers else {}
    flags = {setting: flag_values[setting]} if FLAG in layers else {}

    profile = resolve_profile(env=env, path=path, **flags)

    assert getattr(profile, setting) == expected
    assert profile.origins[setting] == origin


@pytest.mark.parametrize(
    ("region_layer", "endpoint_layer"),
    [(FLAG, FILE), (FLAG, ENV), (ENV, FILE), (FILE, FILE), (FILE, ENV), (FILE, FLAG)],
)
def test_endpoint_from_any_layer_beats_region_from_any_layer(
    tmp_path: Path, region_layer: str, endpoint_layer: str
) -> None:
    file_lines = ["[profiles.default]"]
    env: dict[str, str] = {}
    flags: dict[str, str] = {}
    for layer, key, value in (
        (region_layer, "region", "in1"),
        (endpoint_layer, "endpoint", "http://127.0.0.1:8080/"),
    ):
        if layer == FILE:
            file_lines.append(f'{key} = "{value}"')
        elif layer == ENV:
            env[config.SETTING_ENV[key]] = value
        else:
            flags[key] = value
    path = write_config(tmp_path / "config.toml", "\n".join(file_lines) + "\n")

    profile = resolve_profile(env=env, path=path, **flags)

    assert profile.region == "in1"
    assert profile.base_url == "http://127.0.0.1:8080"


def test_base_url_is_the_region_url_without_an_endpoint(cfg: Path) -> None:
    assert resolve_profile(env={}, path=cfg).base_url == "https://in1.api.clevertap.com"


def test_profile_name_comes_from_ctcli_profile_when_not_given(cfg: Path) -> None:
    profile = resolve_profile(env={"CTCLI_PROFILE": "proxy"}, path=cfg)
    assert profile.name == "proxy"
    assert profile.project_id == "PROXY-ID"


def test_profile_name_argument_beats_ctcli_profile(cfg: Path) -> None:
    profile = resolve_profile("default", env={"CTCLI_PROFILE": "proxy"}, path=cfg)
    assert profile.project_id == "FILE-ID"


def test_subscriptions_of_the_profile_are_passed_through_raw(cfg: Path) -> None:
    profile = resolve_profile("proxy", env={}, path=cfg)
    assert profile.subscriptions == (
        {"trigger": 'type = "track" and event = "Account Closed"', "action": "delete"},
    )


def test_empty_environment_values_count_as_unset(cfg: Path) -> None:
    profile = resolve_profile(env={"CLEVERTAP_PROJECT_ID": "", "CLEVERTAP_REGION": " "}, path=cfg)
    assert (profile.project_id, profile.region) == ("FILE-ID", "in1")


def test_missing_file_and_environment_give_an_empty_profile(tmp_path: Path) -> None:
    profile = resolve_profile(env={}, path=tmp_path / "absent.toml")
    assert (profile.name, profile.project_id, profile.passcode) == ("default", None, None)
    assert profile.region == "eu1"


def test_explicit_profile_missing_from_the_file_lists_the_profiles_there(cfg: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_profile("staging", env={}, path=cfg)
    assert "'staging'" in str(info.value)
    assert "default, proxy" in str(info.value)


def test_profile_from_ctcli_profile_missing_from_the_file_is_an_error(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="staging"):
        resolve_profile(env={"CTCLI_PROFILE": "staging"}, path=cfg)


def test_explicit_missing_profile_is_fine_when_env_supplies_the_credentials(cfg: Path) -> None:
    env = {"CLEVERTAP_PROJECT_ID": "E", "CLEVERTAP_PASSCODE": "p"}
    profile = resolve_profile("staging", env=env, path=cfg)
    assert (profile.name, profile.project_id, profile.passcode) == ("staging", "E", "p")


def test_default_profile_missing_from_the_file_is_not_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", '[profiles.other]\nproject_id = "X"\n')
    assert resolve_profile(env={}, path=path).project_id is None


def test_bad_region_error_says_where_the_value_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CLEVERTAP_REGION"):
        resolve_profile(env={"CLEVERTAP_REGION": "mars"}, path=tmp_path / "absent.toml")


def test_endpoint_that_is_not_an_http_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--endpoint"):
        resolve_profile(endpoint="ftp://x", env={}, path=tmp_path / "absent.toml")


# --- credentials -----------------------------------------------------------------------------


def test_require_credentials_names_the_missing_passcode_and_how_to_set_it() -> None:
    profile = Profile(name="default", project_id="ID")
    with pytest.raises(ConfigError) as info:
        profile.require_credentials()
    assert str(info.value) == (
        "no passcode for profile 'default': run 'ctcli configure --profile default' "
        "or set CLEVERTAP_PASSCODE"
    )


def test_require_credentials_names_both_when_both_are_missing() -> None:
    with pytest.raises(ConfigError) as info:
        Profile(name="p").require_credentials()
    assert "project id and passcode" in str(info.value)
    assert "CLEVERTAP_PROJECT_ID and CLEVERTAP_PASSCODE" in str(info.value)


def test_require_credentials_refuses_a_passcode_no_http_header_can_carry() -> None:
    with pytest.raises(ConfigError) as info:
        Profile(name="p", project_id="ID", passcode="bad passcode\x00").require_credentials()
    assert "bad passcode" not in str(info.value)


def test_require_credentials_passes_when_both_are_set() -> None:
    Profile(name="p", project_id="ID", passcode=SECRET).require_credentials()


def test_repr_and_str_of_a_profile_never_show_the_passcode() -> None:
    profile = Profile(name="p", project_id="ID", passcode=SECRET, origins={"passcode": "env"})
    assert SECRET not in repr(profile)
    assert SECRET not in str(profile)
    assert SECRET not in f"{profile!r} {profile}"
    assert "ID" in repr(profile)


# --- loading ---------------------------------------------------------------------------------


def test_missing_config_file_loads_as_empty(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml") == {}


def test_bad_toml_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", '[profiles.default]\nproject_id = "X"\nregion = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"config file {path} is not valid TOML: ")
    assert "line 3" in message


def test_profile_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", 'profiles = { default = "x" }\n')
    with pytest.raises(ConfigError, match="'default' must be a table"):
        load_config(path)


def test_non_string_passcode_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", "[profiles.default]\npasscode = 77317731\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "passcode must be a string" in str(info.value)
    assert "77317731" not in str(info.value)


def test_subscriptions_that_are_not_tables_are_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", '[profiles.default]\nsubscriptions = ["x"]\n')
    with pytest.raises(ConfigError, match="subscriptions"):
        load_config(path)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would make an ordinary new file world-readable, restored afterwards."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# --- saving ----------------------------------------------------------------------------------


def save(path: Path, name: str = "default", **overrides: str | None) -> None:
    values: dict[str, str | None] = {
        "project_id": "ID",
        "passcode": SECRET,
        "region": "IN",
        "endpoint": None,
    }
    values.update(overrides)
    save_profile(path, name, **values)  # type: ignore[arg-type]


def test_save_creates_a_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    save(path)
    assert mode_of(path) == 0o600


def test_save_writes_the_normalized_region(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    save(path)
    table = tomllib.loads(path.read_text())["profiles"]["default"]
    assert table == {"project_id": "ID", "passcode": SECRET, "region": "in1"}


@pytest.mark.usefixtures("loose_umask")
def test_saved_file_is_0600_before_it_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((str(src), stat.S_IMODE(os.stat(src).st_mode), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(config.os, "replace", spy)
    path = tmp_path / "c.toml"
    save(path)

    [(tmp_name, tmp_mode, tmp_text)] = seen
    assert Path(tmp_name).parent == tmp_path
    assert tmp_mode == 0o600
    assert SECRET in tmp_text
    assert not Path(tmp_name).exists()


@pytest.mark.usefixtures("loose_umask")
def test_temp_file_is_created_private_not_chmodded_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If the temp file were opened with default permissions, this spy on the first write
    # would see a mode other than 0600 before any chmod.
    modes: list[int] = []
    real_fdopen = os.fdopen

    def spy(fd: int, *args: object, **kwargs: object) -> object:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(config.os, "fdopen", spy)
    save(tmp_path / "c.toml")
    assert modes == [0o600]


@pytest.mark.usefixtures("loose_umask")
def test_save_creates_a_missing_directory_with_mode_0700(tmp_path: Path) -> None:
    path = tmp_path / "new" / "c.toml"
    save(path)
    assert mode_of(path.parent) == 0o700
    assert mode_of(path) == 0o600


def test_save_leaves_no_temp_file_behind(tmp_path: Path) -> None:
    save(tmp_path / "c.toml")
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]


def test_save_keeps_other_profiles_and_the_profiles_subscriptions(cfg: Path) -> None:
    save(cfg, "proxy", project_id="NEW-ID", region="sg", endpoint="http://127.0.0.1:9999")
    data = tomllib.loads(cfg.read_text())
    assert data["profiles"]["default"]["passcode"] == "file-passcode"
    proxy = data["profiles"]["proxy"]
    assert proxy["project_id"] == "NEW-ID"
    assert proxy["region"] == "sg1"
    assert proxy["subscriptions"] == [
        {"trigger": 'type = "track" and event = "Account Closed"', "action": "delete"}
    ]


def test_save_with_no_endpoint_removes_the_profiles_endpoint(cfg: Path) -> None:
    save(cfg, "proxy", endpoint=None)
    assert "endpoint" not in tomllib.loads(cfg.read_text())["profiles"]["proxy"]


def test_save_tightens_a_world_readable_file_to_0600(cfg: Path) -> None:
    cfg.chmod(0o644)
    save(cfg)
    assert mode_of(cfg) == 0o600


def test_save_refuses_to_overwrite_a_file_that_is_not_valid_toml(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", "not = [valid\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        save(path)
    assert path.read_text() == "not = [valid\n"


def test_save_refuses_an_unusable_profile_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid profile name"):
        save(tmp_path / "c.toml", "has space")


def test_save_writes_through_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    real = write_config(tmp_path / "real.toml", "")
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    save(link)
    assert link.is_symlink()
    assert SECRET in real.read_text()


# --- permission warning ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_permission_warning_when_group_or_others_can_read_or_write(
    tmp_path: Path, mode: int
) -> None:
    path = write_config(tmp_path / "c.toml", "")
    path.chmod(mode)
    warning = permission_warning(path)
    assert warning is not None
    assert "\n" not in warning
    assert f"chmod 600 {path}" in warning


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_no_permission_warning_for_a_private_file(tmp_path: Path, mode: int) -> None:
    path = write_config(tmp_path / "c.toml", "")
    path.chmod(mode)
    assert permission_warning(path) is None


def test_no_permission_warning_for_a_missing_file(tmp_path: Path) -> None:
    assert permission_warning(tmp_path / "absent.toml") is None


# --- masking ---------------------------------------------------------------------------------


def test_mask_secret_shows_the_last_four_characters_of_a_long_secret() -> None:
    assert mask_secret("0123456789abcd") == "****************abcd"


@pytest.mark.parametrize(("secret", "shown"), [("abcdef", 2), ("abc", 1), ("ab", 0), ("a", 0)])
def test_mask_secret_shows_at_most_a_third_of_a_short_secret(secret: str, shown: int) -> None:
    masked = mask_secret(secret)
    assert masked == "*" * 16 + (secret[-shown:] if shown else "")


def test_mask_secret_length_does_not_reveal_the_secret_length() -> None:
    assert len(mask_secret("x" * 12)) == len(mask_secret("x" * 40))


def test_mask_secret_of_none_says_not_set() -> None:
    assert mask_secret(None) == "(not set)"


def test_redact_url_masks_a_password_and_a_user_part_that_may_be_a_token():
    from ctcli.config import redact_url

    assert (
        redact_url("http://me:s3cret@proxy.example:8080/ct")
        == "http://me:****@proxy.example:8080/ct"
    )
    assert redact_url("https://eu1.api.clevertap.com") == "https://eu1.api.clevertap.com"
    assert redact_url("http://tok3n@proxy.example") == "http://****@proxy.example"
    assert redact_url("http://u:p@[::1") == "http://u:****@[::1"  # malformed, still masked
