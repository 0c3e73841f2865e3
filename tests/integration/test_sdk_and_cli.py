"""The public SDK against the live server, and the CLI against the live stack's database."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OFFICINA = str(Path(sys.executable).parent / "officina")


def test_sdk_whoami_with_connect(sdk_client):
    me = sdk_client.whoami()
    assert me["user"]["username"] == "admin"
    assert any(t["name"] == "default" for t in me["teams"])


def test_sdk_reads_url_and_token_from_environment(live_stack, monkeypatch):
    from officina import sdk

    monkeypatch.setenv("OFFICINA_URL", live_stack.url)
    monkeypatch.setenv("OFFICINA_TOKEN", live_stack.admin_token)
    client = sdk.connect()
    assert client.url == live_stack.url
    assert sdk.whoami()["user"]["username"] == "admin"


def test_sdk_login_then_token_management(live_stack):
    from officina import sdk

    username, password, _ = live_stack.make_user()
    token = sdk.login(live_stack.url, username, password)
    assert token.startswith("off_")
    assert sdk.whoami()["user"]["username"] == username
    created = sdk.tokens.create("script", expires_in_days=7)
    assert created["token"].startswith("off_")
    assert any(t["name"] == "script" for t in sdk.tokens.list())
    sdk.tokens.revoke(created["token_info"]["id"])
    sdk.connect(live_stack.url, created["token"])
    with pytest.raises(sdk.Unauthenticated, match="revoked") as info:
        sdk.whoami()
    assert info.value.status == 401 and info.value.code == "unauthenticated"


def test_sdk_raises_typed_errors_with_server_messages(sdk_client, live_stack):
    sdk = sdk_client
    with pytest.raises(sdk.NotFound, match="no-such-team"):
        sdk.teams.get("no-such-team")
    with pytest.raises(sdk.InvalidRequest, match="role must be one of") as info:
        sdk.teams.set_member("default", "admin", "emperor")
    assert info.value.details == {"role": "invalid"}
    team = live_stack.make_team()
    _, _, viewer_token = live_stack.make_user(team, "viewer")
    sdk.connect(live_stack.url, viewer_token)
    with pytest.raises(sdk.Forbidden):
        sdk.teams.set_member(team, "admin", "viewer")
    with pytest.raises(sdk.Unauthenticated):
        sdk.login(live_stack.url, "admin", "definitely-wrong")


def test_sdk_reports_an_unreachable_server():
    from officina import sdk

    client = sdk.Client("http://127.0.0.1:9", "off_x", timeout=2)
    with pytest.raises(sdk.ConnectionFailed, match="cannot reach"):
        client.get("/whoami")


def _cli(live_stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICINA_")}
    env["OFFICINA_HOME"] = str(live_stack.settings.home)
    return subprocess.run([OFFICINA, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)


def test_cli_user_and_token_create_against_the_running_stack(live_stack):
    from officina import sdk

    created = _cli(live_stack, "user", "create", "grace", "--team", "default", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    assert "password:" in created.stdout
    token = _cli(live_stack, "token", "create", "--user", "grace", "--name", "ci")
    assert token.returncode == 0, token.stderr
    plaintext = token.stdout.strip()
    assert plaintext.startswith("off_") and "\n" not in plaintext
    sdk.connect(live_stack.url, plaintext)
    me = sdk.whoami()
    assert me["user"]["username"] == "grace"
    assert {"name": "default", "role": "viewer"} in me["teams"]


def test_cli_errors_are_clear(live_stack):
    unknown = _cli(live_stack, "token", "create", "--user", "nobody-at-all")
    assert unknown.returncode != 0 and "user 'nobody-at-all' not found" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    duplicate = _cli(live_stack, "user", "create", "admin")
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    version = _cli(live_stack, "version")
    assert version.returncode == 0 and version.stdout.strip() == "0.1.0"
    migrate = _cli(live_stack, "migrate")
    assert migrate.returncode == 0 and "up to date" in migrate.stdout


def test_cli_set_password_from_stdin(live_stack):
    from officina import sdk

    assert _cli(live_stack, "user", "create", "hopper").returncode == 0
    done = _cli(live_stack, "user", "set-password", "hopper", "--password-stdin", stdin="a-long-new-secret\n")
    assert done.returncode == 0, done.stderr
    sdk.login(live_stack.url, "hopper", "a-long-new-secret")
    assert sdk.whoami()["user"]["username"] == "hopper"
