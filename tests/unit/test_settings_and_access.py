"""Pure logic: settings from the environment, generated secrets, and the one access rule."""
from __future__ import annotations

import os
import stat
from datetime import datetime, timezone

import pytest

from officina.platform.auth.access import authorize, require_site_admin
from officina.platform.auth.entities import Action, Principal, Team, User
from officina.platform.errors import Forbidden, NotFound
from officina.platform.settings import Settings, load_local_secrets, with_secrets

NOW = datetime.now(timezone.utc)


def _user(admin: bool = False) -> User:
    return User(1, "ada", None, None, admin, False, NOW)


TEAM = Team(7, "vision", "", NOW)


def test_settings_read_officina_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFICINA_HOME", str(tmp_path))
    monkeypatch.setenv("OFFICINA_WEB_PORT", "9123")
    monkeypatch.setenv("OFFICINA_S3_SECRET_KEY", "s3cr3t")
    settings = Settings()
    assert settings.home == tmp_path and settings.web_port == 9123
    assert "s3cr3t" not in repr(settings)
    env = settings.child_env()
    assert env["OFFICINA_WEB_PORT"] == "9123" and env["OFFICINA_S3_SECRET_KEY"] == "s3cr3t"
    assert "OFFICINA_DATABASE_URL" not in env  # unset stays unset: the embedded stack provides it


def test_settings_reject_a_bad_value(monkeypatch):
    monkeypatch.setenv("OFFICINA_WEB_PORT", "not-a-port")
    with pytest.raises(Exception, match="web_port"):
        Settings()


def test_generated_secrets_are_private_and_stable(tmp_path):
    first = load_local_secrets(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.json").st_mode) == 0o600
    assert load_local_secrets(tmp_path) == first
    filled = with_secrets(Settings(home=tmp_path))
    assert filled.secret_key.get_secret_value() == first["secret_key"]


@pytest.mark.parametrize("role,action,allowed", [
    ("viewer", Action.READ, True), ("viewer", Action.WRITE, False), ("viewer", Action.MANAGE, False),
    ("member", Action.WRITE, True), ("member", Action.MANAGE, False), ("admin", Action.MANAGE, True),
])
def test_roles(role, action, allowed):
    principal = Principal(_user(), roles={TEAM.id: role})
    if allowed:
        authorize(principal, TEAM, action)
    else:
        with pytest.raises(Forbidden, match=role):
            authorize(principal, TEAM, action)


def test_outsiders_get_not_found_and_site_admins_pass():
    with pytest.raises(NotFound, match="vision"):
        authorize(Principal(_user(), roles={99: "admin"}), TEAM, Action.READ)
    authorize(Principal(_user(admin=True)), TEAM, Action.MANAGE)
    with pytest.raises(Forbidden):
        require_site_admin(Principal(_user()))


def test_token_scope_narrows_even_an_admin():
    scoped = Principal(_user(admin=True), scope={"team_id": 99})
    with pytest.raises(NotFound):
        authorize(scoped, TEAM, Action.READ)
    read_only = Principal(_user(), roles={TEAM.id: "admin"}, scope={"read_only": True})
    authorize(read_only, TEAM, Action.READ)
    with pytest.raises(Forbidden, match="read-only"):
        authorize(read_only, TEAM, Action.WRITE)
