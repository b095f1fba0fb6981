"""Settings: an argument given in code wins; the PERDURE_* variable fills in where the code
gives none; then DESIGN's default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import perdure
from perdure import settings

DAY = 86400


@dataclass(frozen=True)
class Setting:
    name: str
    variable: str
    default: Any
    env_text: str
    env_value: Any
    code_value: Any

    def __str__(self) -> str:
        return self.name


SETTINGS = [
    Setting(
        "database_url",
        "PERDURE_DATABASE_URL",
        "sqlite:///perdure.db",
        "sqlite:///from-env.db",
        "sqlite:///from-env.db",
        "sqlite:///from-code.db",
    ),
    Setting("version", "PERDURE_VERSION", None, "v-env", "v-env", "v-code"),
    Setting("lease_seconds", "PERDURE_LEASE_SECONDS", 30, "45", 45.0, 50.0),
    Setting("heartbeat_seconds", "PERDURE_HEARTBEAT_SECONDS", 5, "2.5", 2.5, 3.0),
    Setting("suspend_after", "PERDURE_SUSPEND_AFTER", 5, "7.5", 7.5, 9.0),
    Setting("poll_seconds", "PERDURE_POLL_SECONDS", 1, "0.25", 0.25, 0.5),
    Setting("max_recoveries", "PERDURE_MAX_RECOVERIES", 5, "7", 7, 9),
    Setting("cancel_grace_seconds", "PERDURE_CANCEL_GRACE_SECONDS", 30, "12", 12.0, 13.0),
    Setting("shutdown_grace_seconds", "PERDURE_SHUTDOWN_GRACE_SECONDS", 30, "14", 14.0, 15.0),
    Setting(
        "pending_version_timeout", "PERDURE_PENDING_VERSION_TIMEOUT", DAY, "3600", 3600.0, 7200.0
    ),
    Setting("idempotency_key_ttl", "PERDURE_IDEMPOTENCY_KEY_TTL", 30 * DAY, "60", 60.0, 120.0),
    Setting("max_payload_bytes", "PERDURE_MAX_PAYLOAD_BYTES", 10 * 1024 * 1024, "1024", 1024, 2048),
    Setting("api_key", "PERDURE_API_KEY", None, "env-key", "env-key", "code-key"),
    Setting("secret_key", "PERDURE_SECRET_KEY", None, "env-secret", "env-secret", "code-secret"),
    Setting(
        "public_url",
        "PERDURE_PUBLIC_URL",
        None,
        "https://env.example",
        "https://env.example",
        "https://code.example",
    ),
    Setting("sqlite_synchronous", "PERDURE_SQLITE_SYNCHRONOUS", "full", "normal", "normal", "off"),
    Setting("worker_concurrency", "PERDURE_WORKER_CONCURRENCY", 100, "7", 7, 8),
]
NUMERIC = [s for s in SETTINGS if isinstance(s.default, int | float)]
INTEGER = [s for s in NUMERIC if isinstance(s.env_value, int)]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that read os.environ (through App) see only the variables they set."""
    for setting in SETTINGS:
        monkeypatch.delenv(setting.variable, raising=False)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_the_default_applies_when_neither_code_nor_environment_sets_it(setting: Setting) -> None:
    assert getattr(settings.resolve({}, environ={}), setting.name) == setting.default


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_the_environment_variable_fills_in_and_is_parsed(setting: Setting) -> None:
    value = getattr(
        settings.resolve({}, environ={setting.variable: setting.env_text}), setting.name
    )
    assert value == setting.env_value
    assert type(value) is type(setting.env_value)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_an_argument_given_in_code_wins_over_the_environment(setting: Setting) -> None:
    resolved = settings.resolve(
        {setting.name: setting.code_value}, environ={setting.variable: setting.env_text}
    )
    assert getattr(resolved, setting.name) == setting.code_value


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_an_argument_of_none_counts_as_not_given(setting: Setting) -> None:
    resolved = settings.resolve({setting.name: None}, environ={setting.variable: setting.env_text})
    assert getattr(resolved, setting.name) == setting.env_value


@pytest.mark.parametrize("setting", NUMERIC, ids=str)
@pytest.mark.parametrize("text", ["fast", "1O", "30s"])
def test_a_non_numeric_variable_is_a_configuration_error_naming_it(
    setting: Setting, text: str
) -> None:
    with pytest.raises(perdure.ConfigurationError, match=setting.variable):
        settings.resolve({}, environ={setting.variable: text})


@pytest.mark.parametrize("setting", INTEGER, ids=str)
def test_a_fraction_for_a_whole_number_setting_is_a_configuration_error(
    setting: Setting,
) -> None:
    with pytest.raises(perdure.ConfigurationError, match=setting.variable):
        settings.resolve({}, environ={setting.variable: "2.5"})


@pytest.mark.parametrize("variable", ["PERDURE_POLL_SECONDS", "PERDURE_LEASE_SECONDS"])
def test_nan_is_not_a_usable_duration(variable: str) -> None:
    with pytest.raises(perdure.ConfigurationError, match=variable):
        settings.resolve({}, environ={variable: "nan"})


def test_an_unknown_setting_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(perdure.ConfigurationError, match="lease_secs"):
        settings.resolve({"lease_secs": 3}, environ={})
    with pytest.raises(perdure.ConfigurationError, match="lease_secs"):
        perdure.App("sqlite:///unused.db", lease_secs=3)


def test_a_heartbeat_no_shorter_than_the_lease_is_a_configuration_error() -> None:
    with pytest.raises(perdure.ConfigurationError, match="heartbeat_seconds"):
        settings.resolve({"lease_seconds": 5, "heartbeat_seconds": 5}, environ={})


@pytest.mark.parametrize(
    "name", ["lease_seconds", "poll_seconds", "max_payload_bytes", "worker_concurrency"]
)
def test_a_zero_for_a_positive_setting_is_a_configuration_error(name: str) -> None:
    with pytest.raises(perdure.ConfigurationError, match=name):
        settings.resolve({name: 0}, environ={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lease_seconds", "40"),
        ("max_recoveries", 2.5),
        ("worker_concurrency", True),
        ("api_key", 123),
        ("poll_seconds", float("inf")),
    ],
)
def test_a_code_argument_of_the_wrong_type_is_a_configuration_error(
    name: str, value: object
) -> None:
    with pytest.raises(perdure.ConfigurationError, match=name):
        settings.resolve({name: value}, environ={})


# --- through App(...) and the real process environment ------------------------------------------


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_app_reads_the_environment_where_the_code_gives_nothing(
    setting: Setting, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(setting.variable, setting.env_text)
    assert getattr(perdure.App().settings, setting.name) == setting.env_value


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_app_arguments_win_over_the_environment(
    setting: Setting, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(setting.variable, setting.env_text)
    if setting.name == "database_url":
        app = perdure.App(setting.code_value)
    else:
        app = perdure.App(**{setting.name: setting.code_value})
    assert getattr(app.settings, setting.name) == setting.code_value


def test_app_uses_the_defaults_without_arguments_or_variables() -> None:
    assert perdure.App().settings == settings.Settings()
    assert perdure.App().settings.database_url == "sqlite:///perdure.db"


def test_app_reports_a_bad_variable_as_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PERDURE_LEASE_SECONDS", "thirty")
    with pytest.raises(perdure.ConfigurationError, match="PERDURE_LEASE_SECONDS"):
        perdure.App()
