"""The [auth] section is checked before the server starts, naming the key at fault."""

from __future__ import annotations

from typing import Any

import pytest

from fxbatch.errors import SettingsError
from fxbatch.login import LoginConfig, login_config
from fxbatch.settings import Settings, load_settings

GOOD: dict[str, Any] = {
    "redirect_uri": "https://fxbatch.desk.example/oauth2callback",
    "cookie_secret": "k" * 40,
    "client_id": "fxbatch",
    "client_secret": "s3cret-value",
    "server_metadata_url": "https://login.desk.example/.well-known/openid-configuration",
}


def settings(**values: Any) -> Settings:
    return Settings(**{"admin_email": "Head@Desk.example", **values})


def test_no_auth_section_is_single_user_unless_login_is_asked_for() -> None:
    assert login_config(None, settings()) is None
    assert login_config({}, settings()) is None
    with pytest.raises(SettingsError, match=r"FXBATCH_LOGIN .* \[auth\] section of .streamlit/secrets.toml is missing"):
        login_config(None, settings(login=True))


def test_a_good_section_turns_login_on_with_the_first_admin() -> None:
    assert login_config(GOOD, settings()) == LoginConfig(provider=None, first_admin="head@desk.example")
    named = {k: GOOD[k] for k in ("redirect_uri", "cookie_secret")} | {"okta": {k: GOOD[k] for k in
             ("client_id", "client_secret", "server_metadata_url")}}  # fmt: skip
    assert login_config(named, settings()) == LoginConfig(provider="okta", first_admin="head@desk.example")


@pytest.mark.parametrize("key", sorted(GOOD))
def test_each_missing_key_is_named(key: str) -> None:
    section = {k: v for k, v in GOOD.items() if k != key}
    with pytest.raises(SettingsError, match=f"{key} is missing from the \\[auth\\] section"):
        login_config(section, settings())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"redirect_uri": "https://fxbatch.desk.example/callback"}, "redirect_uri"),
        ({"redirect_uri": "not a url/oauth2callback"}, "redirect_uri"),
        ({"cookie_secret": "short"}, "cookie_secret"),
        ({"server_metadata_url": "login.desk.example"}, "server_metadata_url"),
        ({"client_id": 42}, "client_id"),
    ],
)
def test_a_wrong_value_is_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        login_config({**GOOD, **change}, settings())


def test_a_section_that_is_not_one_and_two_providers_are_refused() -> None:
    with pytest.raises(SettingsError, match="must be a section"):
        login_config("yes", settings())
    two = {"redirect_uri": GOOD["redirect_uri"], "cookie_secret": GOOD["cookie_secret"],
           "a": {"client_id": "x"}, "b": {"client_id": "y"}}  # fmt: skip
    with pytest.raises(SettingsError, match="2 providers"):
        login_config(two, settings())
    one_bad = {**two}
    del one_bad["b"]
    with pytest.raises(SettingsError, match=r"client_secret is missing from the \[auth.a\] section"):
        login_config(one_bad, settings())


def test_login_needs_the_first_admin_setting() -> None:
    with pytest.raises(SettingsError, match="FXBATCH_ADMIN_EMAIL"):
        login_config(GOOD, Settings())
    with pytest.raises(SettingsError, match=r"FXBATCH_ADMIN_EMAIL is not valid: .*'not-an-address' is not an e-mail"):
        load_settings(admin_email="not-an-address")
