"""pfcon's environment variables (README.md, docs/wire-contract.md §11) and CONTAINER_USER (docs/wire-contract.md §6.4)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

import msgspec

from pfcon.adapters.compute.options import ContainerUser, IdSpec, parse_container_user
from pfcon.config import DEV_SECRET_KEY, SECTIONS, ConfigError, Settings
from pfcon.config import load_settings as _load_settings

DEV = {"APPLICATION_MODE": "dev"}
PROD_KEY = "prod-secret-0123456789abcdefghijklmnop"
PROD_SECRETS = {"SECRET_KEY": PROD_KEY, "PFCON_USER": "alice", "PFCON_PASSWORD": "alice-pw"}
RESOLVED = (
    "application_mode", "storage_env", "container_env", "compute_volume_type", "storebase_host",
    "secret_key", "pfcon_user", "pfcon_password", "job_labels", "container_user",
)


def flat(s: Settings) -> Any:
    """Every setting under one flat name (sections merged, resolved views on top)."""
    values: dict[str, Any] = {}
    for name in SECTIONS:
        section = msgspec.structs.asdict(getattr(s, name))
        prefix = f"{name}_" if name in ("swift", "docker", "s3") else ""
        values.update({prefix + k: v for k, v in section.items()})
    values["innetwork"] = s.storage.innetwork
    values.update({name: getattr(s, name) for name in RESOLVED})
    return SimpleNamespace(**values)


def load_settings(env: dict[str, str]) -> Any:
    return flat(_load_settings(env))


def dev(**env: str) -> Any:
    return load_settings({**DEV, **env})


def config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load_settings(env)
    return info.value


# -- defaults and APPLICATION_MODE --------------------------------------------


def test_dev_defaults_follow_pfcon() -> None:
    s = load_settings(DEV)
    assert s.application_mode == "dev"
    assert s.secret_key == DEV_SECRET_KEY
    assert (s.pfcon_user, s.pfcon_password) == ("pfcon", "pfcon1234")
    assert s.innetwork is False
    assert s.storage_env == "zipfile"
    assert s.container_env == "docker"
    assert s.compute_volume_type == "docker_local_volume"
    assert s.storebase is None
    assert s.volume_name is None
    assert s.storebase_mount == "/var/local/storeBase"
    assert s.storebase_host == "/var/local/storeBase"
    assert s.job_logs_tail == 1000
    assert s.job_labels == ()
    assert s.ignore_limits is False
    assert s.container_user is None
    assert s.enable_home_workaround is False
    assert s.shm_size_mib is None
    assert s.pfcon_selector == "org.chrisproject.role=pfcon"
    assert s.remove_jobs is True
    assert s.port == 5005


def test_application_mode_defaults_to_production_which_needs_the_secret_key() -> None:
    e = config_error({})
    assert e.variable == "SECRET_KEY"
    assert "SECRET_KEY" in str(e)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "PFCON_USER", "PFCON_PASSWORD"])
def test_production_requires_each_secret(missing: str) -> None:
    env = {k: v for k, v in PROD_SECRETS.items() if k != missing}
    assert config_error(env).variable == missing
    # an empty value counts as missing
    assert config_error({**env, missing: ""}).variable == missing
    assert config_error({**env, "APPLICATION_MODE": "production"}).variable == missing


def test_production_with_secrets_uses_them() -> None:
    s = load_settings(PROD_SECRETS)
    assert s.application_mode == "production"
    assert s.secret_key == PROD_KEY
    assert (s.pfcon_user, s.pfcon_password) == ("alice", "alice-pw")


def test_dev_mode_accepts_overrides_of_the_credentials() -> None:
    s = dev(PFCON_USER="bob", PFCON_PASSWORD="pw", SECRET_KEY="sk")
    assert (s.pfcon_user, s.pfcon_password, s.secret_key) == ("bob", "pw", "sk")


# -- booleans -------------------------------------------------------------------

BOOL_VARS = {
    "IGNORE_LIMITS": "ignore_limits",
    "ENABLE_HOME_WORKAROUND": "enable_home_workaround",
    "REMOVE_JOBS": "remove_jobs",
    "PULL_IMAGES": "pull_images",
}


@pytest.mark.parametrize("variable", sorted(BOOL_VARS))
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yes", True), ("YES", True), ("Yes", True), ("true", True), ("TRUE", True),
        ("True", True), ("1", True), ("on", True), ("ON", True), (" yes ", True),
        ("no", False), ("NO", False), ("false", False), ("False", False), ("0", False),
        ("off", False), ("Off", False),
    ],
)
def test_booleans_are_case_insensitive(variable: str, raw: str, expected: bool) -> None:
    assert getattr(dev(**{variable: raw}), BOOL_VARS[variable]) is expected


@pytest.mark.parametrize("variable", sorted(BOOL_VARS))
@pytest.mark.parametrize("raw", ["maybe", "2", "yess", "truee", "-1", "nope", "enabled"])
def test_invalid_booleans_name_the_variable(variable: str, raw: str) -> None:
    e = config_error({**DEV, variable: raw})
    assert e.variable == variable
    assert raw in str(e)


def test_empty_boolean_means_default() -> None:
    s = dev(IGNORE_LIMITS="", REMOVE_JOBS="")
    assert s.ignore_limits is False
    assert s.remove_jobs is True


def test_invalid_innetwork_boolean_is_refused() -> None:
    assert config_error({**DEV, "PFCON_INNETWORK": "sometimes"}).variable == "PFCON_INNETWORK"


# -- STORAGE_ENV by PFCON_INNETWORK --------------------------------------------


def test_in_network_defaults_to_swift() -> None:
    s = dev(PFCON_INNETWORK="true")
    assert s.innetwork is True
    assert s.storage_env == "swift"


@pytest.mark.parametrize("storage", ["filesystem", "fslink", "swift", "s3"])
def test_in_network_storage_envs(storage: str) -> None:
    assert dev(PFCON_INNETWORK="yes", STORAGE_ENV=storage).storage_env == storage


@pytest.mark.parametrize("storage", ["zipfile", "nfs", "ZIPFILE"])
def test_in_network_refuses_other_storage_envs(storage: str) -> None:
    e = config_error({**DEV, "PFCON_INNETWORK": "true", "STORAGE_ENV": storage})
    assert e.variable == "STORAGE_ENV"
    assert storage in str(e)


@pytest.mark.parametrize("storage", ["swift", "filesystem", "fslink", "s3", "bogus"])
def test_out_of_network_only_accepts_zipfile(storage: str) -> None:
    e = config_error({**DEV, "STORAGE_ENV": storage})
    assert e.variable == "STORAGE_ENV"
    assert "zipfile" in str(e)


def test_out_of_network_zipfile_explicitly() -> None:
    assert dev(PFCON_INNETWORK="false", STORAGE_ENV="zipfile").storage_env == "zipfile"


def test_production_swift_requires_swift_settings() -> None:
    e = config_error({**PROD_SECRETS, "PFCON_INNETWORK": "true"})
    assert e.variable == "SWIFT_AUTH_URL"


def test_production_swift_with_settings() -> None:
    s = load_settings(
        {
            **PROD_SECRETS,
            "PFCON_INNETWORK": "true",
            "SWIFT_AUTH_URL": "http://swift:8080/auth/v1.0",
            "SWIFT_USERNAME": "u:u",
            "SWIFT_KEY": "swift-secret",
            "SWIFT_CONTAINER_NAME": "c",
        }
    )
    assert (s.swift_auth_url, s.swift_username, s.swift_key, s.swift_container_name) == (
        "http://swift:8080/auth/v1.0",
        "u:u",
        "swift-secret",
        "c",
    )


def test_production_filesystem_does_not_need_swift() -> None:
    s = load_settings({**PROD_SECRETS, "PFCON_INNETWORK": "true", "STORAGE_ENV": "fslink"})
    assert s.storage_env == "fslink"


# -- CONTAINER_ENV ----------------------------------------------------------------


def test_container_env_docker() -> None:
    assert dev(CONTAINER_ENV="docker").container_env == "docker"


def test_podman_is_an_alias_of_docker() -> None:
    s = dev(CONTAINER_ENV="podman")
    assert s.container_env == "docker"
    assert s.compute_volume_type == "docker_local_volume"


SLURM = {**DEV, "CONTAINER_ENV": "slurm", "STOREBASE": "/nfs/storeBase"}


def test_slurm_settings() -> None:
    s = _load_settings({**SLURM, "SLURM_PARTITION": "short", "SLURM_SBATCH_OPTIONS": "--constraint=avx2 '--comment-x=a b'",
                       "TIMELIMIT_MINUTES": "30", "SLURM_CONTAINER_RUNTIME": "apptainer"})  # fmt: skip
    assert s.container_env == "slurm" and s.compute_volume_type == "host"
    assert s.slurm.partition == "short" and s.compute.time_limit_minutes == 30
    assert s.slurm.sbatch_option_list == ("--constraint=avx2", "--comment-x=a b")


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        ({"STOREBASE": ""}, "STOREBASE", "required"),
        ({"COMPUTE_VOLUME_TYPE": "docker_local_volume"}, "COMPUTE_VOLUME_TYPE", "allowed: host"),
        ({"SLURM_SBATCH_OPTIONS": "--output=/tmp/x"}, "SLURM_SBATCH_OPTIONS", "set by the server"),
        ({"SLURM_SBATCH_OPTIONS": "-Jname"}, "SLURM_SBATCH_OPTIONS", "set by the server"),
        ({"SLURM_SBATCH_OPTIONS": "constraint"}, "SLURM_SBATCH_OPTIONS", "not an option"),
        ({"SLURM_SBATCH_OPTIONS": "--x='unclosed"}, "SLURM_SBATCH_OPTIONS", "shell"),
        ({"SLURM_CONTAINER_RUNTIME": "lxc"}, "SLURM_CONTAINER_RUNTIME", "lxc"),
        ({"SLURM_RUNTIME_COMMAND": "run {image}"}, "SLURM_RUNTIME_COMMAND", "{command}"),
        ({"SLURM_RUNTIME_STOP_COMMAND": "kill"}, "SLURM_RUNTIME_STOP_COMMAND", "SLURM_RUNTIME_COMMAND"),
        ({"SLURM_CONTAINER_RUNTIME": "singularity", "CONTAINER_USER": "1000:1000"}, "CONTAINER_USER", "singularity"),
        ({"SLURM_POLL_SECONDS": "0"}, "SLURM_POLL_SECONDS", ""),
        ({"TIMELIMIT_MINUTES": "0"}, "TIMELIMIT_MINUTES", ""),
    ],
)  # fmt: skip
def test_slurm_settings_are_validated(env: dict[str, str], variable: str, words: str) -> None:
    e = config_error({**SLURM, **env})
    assert e.variable == variable
    assert words in str(e)


@pytest.mark.parametrize("value", ["lxc", "Docker", "k8s", "dockerx"])
def test_unknown_container_envs_are_refused(value: str) -> None:
    e = config_error({**DEV, "CONTAINER_ENV": value})
    assert e.variable == "CONTAINER_ENV"
    assert "not available" not in str(e)
    assert value in str(e)


# -- COMPUTE_VOLUME_TYPE, STOREBASE, VOLUME_NAME ---------------------------------


def test_host_volume_type_with_absolute_storebase() -> None:
    s = dev(COMPUTE_VOLUME_TYPE="host", STOREBASE="/data/storeBase/")
    assert s.compute_volume_type == "host"
    assert s.storebase == "/data/storeBase"
    assert s.storebase_host == "/data/storeBase"


def test_host_volume_type_needs_storebase() -> None:
    assert config_error({**DEV, "COMPUTE_VOLUME_TYPE": "host"}).variable == "STOREBASE"


@pytest.mark.parametrize("storebase", ["relative/dir", "./storeBase", "~/storeBase"])
def test_host_volume_type_needs_an_absolute_storebase(storebase: str) -> None:
    e = config_error({**DEV, "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": storebase})
    assert e.variable == "STOREBASE"
    assert "absolute" in str(e)


def test_volume_name_conflicts_with_host() -> None:
    e = config_error(
        {**DEV, "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": "/data", "VOLUME_NAME": "vol"}
    )
    assert e.variable == "VOLUME_NAME"


def test_docker_local_volume_with_volume_name() -> None:
    s = dev(COMPUTE_VOLUME_TYPE="docker_local_volume", VOLUME_NAME="pfcon-storebase")
    assert s.compute_volume_type == "docker_local_volume"
    assert s.volume_name == "pfcon-storebase"
    assert s.storebase is None


def test_storebase_is_only_for_host_volumes() -> None:
    e = config_error({**DEV, "COMPUTE_VOLUME_TYPE": "docker_local_volume", "STOREBASE": "/data"})
    assert e.variable == "STOREBASE"
    # with the default volume type as well
    assert config_error({**DEV, "STOREBASE": "/data"}).variable == "STOREBASE"


@pytest.mark.parametrize("value", ["kubernetes_pvc", "nfs", "HOST"])
def test_volume_types_not_valid_for_docker(value: str) -> None:
    e = config_error({**DEV, "COMPUTE_VOLUME_TYPE": value, "STOREBASE": "/data"})
    assert e.variable == "COMPUTE_VOLUME_TYPE"
    assert value in str(e)


def test_storebase_mount_must_be_absolute_and_loses_trailing_slash() -> None:
    assert dev(STOREBASE_MOUNT="/mnt/sb/").storebase_mount == "/mnt/sb"
    assert config_error({**DEV, "STOREBASE_MOUNT": "mnt/sb"}).variable == "STOREBASE_MOUNT"


def test_storebase_root_stays_root() -> None:
    s = dev(COMPUTE_VOLUME_TYPE="host", STOREBASE="/", STOREBASE_MOUNT="/var/local/storeBase")
    assert s.storebase == "/"
    assert s.storebase_host == "/"


# -- JOB_LABELS -------------------------------------------------------------------


def test_job_labels_parsing() -> None:
    s = dev(JOB_LABELS="team=chris,env=test")
    assert s.job_labels == (("team", "chris"), ("env", "test"))


def test_job_labels_strip_blanks_and_allow_empty_values() -> None:
    s = dev(JOB_LABELS=" a = 1 , b= ")
    assert s.job_labels == (("a", "1"), ("b", ""))


def test_job_label_value_may_contain_equals() -> None:
    assert dev(JOB_LABELS="k=a=b").job_labels == (("k", "a=b"),)


def test_empty_job_labels() -> None:
    assert dev(JOB_LABELS="").job_labels == ()
    assert dev(JOB_LABELS="   ").job_labels == ()


@pytest.mark.parametrize("raw", ["novalue", "a=1,b", "=v", "a=1,,b=2", " =x"])
def test_invalid_job_labels_name_the_variable(raw: str) -> None:
    assert config_error({**DEV, "JOB_LABELS": raw}).variable == "JOB_LABELS"


# -- integers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "attr", "raw", "expected"),
    [
        ("SHM_SIZE", "shm_size_mib", "1", 1),
        ("SHM_SIZE", "shm_size_mib", "512", 512),
        ("SHM_SIZE", "shm_size_mib", str(1024 * 1024), 1024 * 1024),
        ("SHM_SIZE", "shm_size_mib", "", None),
        ("JOB_LOGS_TAIL", "job_logs_tail", "0", 0),
        ("JOB_LOGS_TAIL", "job_logs_tail", " 250 ", 250),
        ("JOB_LOGS_TAIL", "job_logs_tail", "10000000", 10_000_000),
        ("PORT", "port", "1", 1),
        ("PORT", "port", "8080", 8080),
        ("PORT", "port", "65535", 65535),
    ],
)
def test_integers_in_range(variable: str, attr: str, raw: str, expected: Any) -> None:
    assert getattr(dev(**{variable: raw}), attr) == expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SHM_SIZE", "0"),
        ("SHM_SIZE", "-5"),
        ("SHM_SIZE", str(1024 * 1024 + 1)),
        ("SHM_SIZE", "64m"),
        ("SHM_SIZE", "1.5"),
        ("JOB_LOGS_TAIL", "-1"),
        ("JOB_LOGS_TAIL", "10000001"),
        ("JOB_LOGS_TAIL", "lots"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "http"),
    ],
)
def test_integers_out_of_range_or_malformed(variable: str, raw: str) -> None:
    e = config_error({**DEV, variable: raw})
    assert e.variable == variable


# -- CONTAINER_USER (docs/wire-contract.md §6.4) -------------------------------------


@pytest.mark.parametrize("value", [None, "", ":"])
def test_container_user_unset(value: str | None) -> None:
    assert parse_container_user(value) is None


@pytest.mark.parametrize(
    ("value", "uid", "gid"),
    [
        ("1000:", IdSpec(1000, 1000), None),
        (":1000", None, IdSpec(1000, 1000)),
        ("1000:1001", IdSpec(1000, 1000), IdSpec(1001, 1001)),
        ("0:0", IdSpec(0, 0), IdSpec(0, 0)),
        ("1000-1234:", IdSpec(1000, 1234), None),
        ("1000-1234:5678", IdSpec(1000, 1234), IdSpec(5678, 5678)),
        ("1000-1234:5678-12345", IdSpec(1000, 1234), IdSpec(5678, 12345)),
    ],
)
def test_container_user_table(value: str, uid: IdSpec | None, gid: IdSpec | None) -> None:
    assert parse_container_user(value) == ContainerUser(uid, gid)


@pytest.mark.parametrize(
    "value",
    [
        "1000",  # no ':'
        "1000:1000:1000",
        "abc:",
        ":abc",
        "1000-:",
        "-1000:",
        "1000-1234-5:",
        "1234-1000:",  # high < low
        "1.5:",
        "1000 :",
        "0x10:",
        f"{2**31}:",
    ],
)
def test_container_user_bad_formats(value: str) -> None:
    with pytest.raises(ValueError):
        parse_container_user(value)


def test_container_user_bad_format_via_settings_names_the_variable() -> None:
    e = config_error({**DEV, "CONTAINER_USER": "root"})
    assert e.variable == "CONTAINER_USER"
    assert "UID:GID" in str(e)


def test_container_user_via_settings() -> None:
    assert dev(CONTAINER_USER="1000-1001:5678").container_user == ContainerUser(
        IdSpec(1000, 1001), IdSpec(5678, 5678)
    )
    assert dev(CONTAINER_USER=":").container_user is None


def test_pick_fixed_ids() -> None:
    user = parse_container_user("1000:2000")
    assert user is not None
    assert user.pick() == (1000, 2000)
    only_uid = parse_container_user("1000:")
    assert only_uid is not None
    assert only_uid.pick() == (1000, None)
    only_gid = parse_container_user(":7")
    assert only_gid is not None
    assert only_gid.pick() == (None, 7)


def test_pick_stays_inside_the_ranges_and_covers_them() -> None:
    user = parse_container_user("1000-1003:5678-5679")
    assert user is not None
    picks = [user.pick() for _ in range(400)]
    uids = Counter(uid for uid, _ in picks)
    gids = Counter(gid for _, gid in picks)
    assert set(uids) == {1000, 1001, 1002, 1003}
    assert set(gids) == {5678, 5679}


# -- secrets never printed ---------------------------------------------------------


def test_repr_never_shows_secrets() -> None:
    s = _load_settings(
        {
            "SECRET_KEY": "TOPSECRET-signing-key-0123456789abcdef",
            "PFCON_USER": "alice",
            "PFCON_PASSWORD": "hunter2-password",
            "PFCON_INNETWORK": "true",
            "SWIFT_AUTH_URL": "http://swift:8080/auth/v1.0",
            "SWIFT_USERNAME": "chris:chris",
            "SWIFT_KEY": "swift-key-material",
            "SWIFT_CONTAINER_NAME": "users",
        }
    )
    for text in (repr(s), str(s), f"{s}", f"{s!r}"):
        assert "TOPSECRET-signing-key" not in text
        assert "hunter2-password" not in text
        assert "swift-key-material" not in text
    assert "swift" in repr(s)  # still says something useful


def test_repr_of_dev_defaults_hides_dev_secrets() -> None:
    text = repr(_load_settings(DEV))
    assert DEV_SECRET_KEY not in text
    assert "pfcon1234" not in text


# -- failing closed (production) --------------------------------------------------


@pytest.mark.parametrize("mode", ["prod", "Production", "PRODUCTION", "development", "Dev", "test", " "])
def test_application_mode_accepts_only_its_documented_values(mode: str) -> None:
    env = {**PROD_SECRETS, "APPLICATION_MODE": mode}
    if not mode.strip():
        assert _load_settings(env).application_mode == "production"  # empty = unset
        return
    e = config_error(env)
    assert e.variable == "APPLICATION_MODE"
    assert "production" in str(e) and "dev" in str(e)


def test_production_refuses_the_dev_secret_key() -> None:
    e = config_error({**PROD_SECRETS, "SECRET_KEY": DEV_SECRET_KEY})
    assert e.variable == "SECRET_KEY"
    assert DEV_SECRET_KEY not in str(e)


@pytest.mark.parametrize("key", ["s3cr3t", "short-key", "x" * 31, "é" * 15])
def test_production_refuses_a_secret_key_too_short_for_hs256(key: str) -> None:
    e = config_error({**PROD_SECRETS, "SECRET_KEY": key})
    assert e.variable == "SECRET_KEY"
    assert "32" in str(e)
    assert key not in str(e)


def test_production_accepts_a_32_byte_secret_key() -> None:
    assert _load_settings({**PROD_SECRETS, "SECRET_KEY": "k" * 32}).secret_key == "k" * 32


def test_production_refuses_the_dev_password() -> None:
    e = config_error({**PROD_SECRETS, "PFCON_PASSWORD": "pfcon1234"})
    assert e.variable == "PFCON_PASSWORD"
    assert "pfcon1234" not in str(e)


def test_dev_mode_still_has_pfcon_dev_defaults() -> None:
    s = _load_settings(DEV)
    assert (s.pfcon_user, s.pfcon_password, s.secret_key) == ("pfcon", "pfcon1234", DEV_SECRET_KEY)


def test_secrets_are_not_shown_in_errors_about_them() -> None:
    e = config_error({**PROD_SECRETS, "SECRET_KEY": "tiny-secret"})
    assert "tiny-secret" not in str(e)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("MAX_HEADER_BYTES", "10"),
        ("MAX_HEADER_BYTES", "lots"),
        ("HEADER_TIMEOUT", "0"),
        ("BODY_TIMEOUT", "-1"),
        ("MAX_BODY_BYTES", "1"),
        ("MAX_UPLOADS", "0"),
        ("ZIP_MAX_RATIO", "-2"),
        ("STOREBASE_RESERVE_BYTES", "1k"),
        ("WORKER_THREADS", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("OUTPUT_ZIP_COMPRESSION", "bzip2"),
        ("UPLOAD_DIR", "relative/dir"),
    ],
)
def test_every_typed_setting_names_its_variable(variable: str, raw: str) -> None:
    e = config_error({**DEV, variable: raw})
    assert e.variable == variable
    assert variable in str(e)


def test_limits_have_safe_defaults_and_can_be_set() -> None:
    s = _load_settings(DEV)
    assert s.http.max_header_bytes == 64 * 1024
    assert s.zip.max_ratio == 500
    assert s.zip.max_uncompressed_bytes <= 16 * 1024**3
    assert s.http.zip_max_upload_bytes <= 16 * 1024**3
    assert _load_settings({**DEV, "MAX_HEADER_BYTES": "8192"}).http.max_header_bytes == 8192
    assert _load_settings({**DEV, "LOG_LEVEL": "debug"}).app.log_level == "DEBUG"


def test_docker_connection_is_read_here_not_by_the_adapter() -> None:
    s = _load_settings({**DEV, "DOCKER_HOST": "unix:///run/podman/podman.sock"})
    assert s.docker.host == "unix:///run/podman/podman.sock"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "CROMWELL_URL"),
        ({"CROMWELL_URL": "cromwell:8000"}, "CROMWELL_URL"),
        ({"CROMWELL_URL": "http://127.0.0.1:9"}, "TIMELIMIT_MINUTES"),
        ({"CROMWELL_URL": "http://127.0.0.1:9", "TIMELIMIT_MINUTES": "30"}, "CROMWELL_URL"),  # nothing answers there
    ],
)
def test_cromwell_needs_its_server_and_a_time_limit(env: dict[str, str], variable: str) -> None:
    from pfcon import bootstrap, registry

    settings = _load_settings({**DEV, "CONTAINER_ENV": "cromwell", "STOREBASE": "/nfs/storeBase", "CROMWELL_TIMEOUT": "2", **env})
    with pytest.raises(ConfigError) as e:
        bootstrap.cromwell_compute(settings, registry.scheduler("cromwell"))
    assert e.value.variable == variable


def test_slurm_needs_the_slurm_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from pfcon import bootstrap, registry

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError) as e:
        bootstrap.slurm_compute(_load_settings(SLURM), registry.scheduler("slurm"))
    assert e.value.variable == "CONTAINER_ENV" and "sbatch" in str(e.value)
