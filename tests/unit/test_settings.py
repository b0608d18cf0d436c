"""Settings from Streamlit secrets under the environment: precedence, unknown keys, bad values."""

from __future__ import annotations

import pytest

from fxbatch.errors import SettingsError
from fxbatch.settings import load_settings, settings_from_secrets


def test_secrets_fill_settings_and_the_environment_wins() -> None:
    secrets = {"bank_client_id": "from-secrets", "bank_client_secret": "s3cret", "bank_url": "http://bank:8600"}
    settings = settings_from_secrets(secrets, environ={"FXBATCH_BANK_CLIENT_ID": "from-env"})
    assert settings.bank_client_secret.get_secret_value() == "s3cret"
    assert settings.bank_url == "http://bank:8600"
    assert settings.bank_client_id != "from-secrets"  # left to the environment (pydantic-settings reads it)
    assert "s3cret" not in repr(settings)


def test_an_unknown_secret_and_a_bad_value_are_named_without_showing_the_value() -> None:
    with pytest.raises(SettingsError, match=r"Secret fxbatch\.bank_secret is not an fxbatch setting"):
        settings_from_secrets({"bank_secret": "x"}, environ={})
    with pytest.raises(SettingsError, match=r"secret fxbatch\.bank_timeout_s") as caught:
        settings_from_secrets({"bank_timeout_s": -4}, environ={})
    assert "-4" not in caught.value.message
    with pytest.raises(SettingsError, match=r"secret fxbatch\.bank_url"):
        settings_from_secrets({"bank_url": "bank.example.com"}, environ={})


def test_the_old_spread_setting_in_basis_points_is_refused_naming_its_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXBATCH_DEFAULT_SPREAD_BPS", "25")
    with pytest.raises(SettingsError, match=r"FXBATCH_DEFAULT_SPREAD_BPS.*FXBATCH_DEFAULT_SPREAD_PIPS"):
        load_settings()


def test_the_app_refuses_the_old_spread_setting_too() -> None:
    with pytest.raises(SettingsError, match="FXBATCH_DEFAULT_SPREAD_PIPS"):
        settings_from_secrets({}, environ={"FXBATCH_DEFAULT_SPREAD_BPS": "25"})
