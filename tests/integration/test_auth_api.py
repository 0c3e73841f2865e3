"""Auth over the real stack: login, tokens, roles, team isolation, bad input."""
from __future__ import annotations

import re
import time

from checks import assert_error


def test_login_returns_a_token_that_authenticates(anon_api, live_stack):
    response = anon_api.post("/auth/login", {"username": "admin", "password": live_stack.admin_password})
    assert response.status_code == 201
    token = response.get_json()["token"]
    assert token.startswith("off_")
    me = anon_api.get("/whoami", token=token).get_json()
    assert me["user"]["username"] == "admin" and me["user"]["is_admin"] is True
    assert "password_hash" not in me["user"]
    assert {"name": "default", "role": "admin"} in me["teams"]


def test_wrong_password_and_unknown_user_get_the_same_401(anon_api):
    wrong = anon_api.post("/auth/login", {"username": "admin", "password": "not-the-password"})
    unknown = anon_api.post("/auth/login", {"username": "nobody-here", "password": "whatever-it-is"})
    assert_error(wrong, 401, "unauthenticated", mentions="wrong username or password")
    assert_error(unknown, 401, "unauthenticated", mentions="wrong username or password")


def test_routes_require_auth_except_health_and_login(anon_api, client):
    assert_error(anon_api.get("/whoami"), 401, "unauthenticated")
    assert_error(anon_api.get("/teams"), 401, "unauthenticated")
    assert_error(anon_api.post("/tokens", {"name": "x"}), 401, "unauthenticated")
    assert client.get("/livez").status_code == 200
    assert client.get("/healthz").status_code in (200, 503)


def test_bad_authorization_header_and_unknown_token(anon_api):
    response = anon_api.get("/whoami", headers={"Authorization": "Basic abc"})
    assert_error(response, 401, "unauthenticated", mentions="Bearer")
    assert_error(anon_api.get("/whoami", token="off_not-a-real-token"), 401, "unauthenticated")
    assert_error(anon_api.get("/whoami", token="garbage"), 401, "unauthenticated")


def test_token_lifecycle_shown_once_stored_hashed_and_revocable(api, live_stack):
    created = api.post("/tokens", {"name": "laptop"})
    assert created.status_code == 201
    body = created.get_json()
    token, token_id = body["token"], body["token_info"]["id"]
    assert "token" not in body["token_info"] and "token_hash" not in body["token_info"]
    listed = api.get("/tokens").get_json()["tokens"]
    assert any(t["id"] == token_id and t["name"] == "laptop" for t in listed)
    assert all("token" not in t for t in listed)
    with live_stack.services.pool.connection() as conn:
        stored = conn.execute("SELECT token_hash FROM api_tokens WHERE id = %s", (token_id,)).fetchone()[0]
    assert token.encode() not in bytes(stored) and len(bytes(stored)) == 32
    assert api.get("/whoami", token=token).status_code == 200
    assert api.delete(f"/tokens/{token_id}").status_code == 200
    assert_error(api.get("/whoami", token=token), 401, "unauthenticated", mentions="revoked")


def test_expired_token_is_refused(api, live_stack):
    user = live_stack.services.auth.get_user("admin")
    _, token = live_stack.services.auth.create_token(user.id, "short", expires_in_days=1 / 86400)
    time.sleep(1.2)
    assert_error(api.get("/whoami", token=token), 401, "unauthenticated", mentions="expired")


def test_cannot_revoke_someone_elses_token(api, live_stack):
    _, _, other_token = live_stack.make_user()
    theirs = api.get("/tokens").get_json()["tokens"][0]["id"]  # one of the admin's
    assert_error(api.delete(f"/tokens/{theirs}", token=other_token), 404, "not_found")


def test_viewer_can_read_but_not_write_and_gets_403(api, live_stack):
    team = live_stack.make_team()
    _, _, viewer = live_stack.make_user(team, "viewer")
    _, _, member = live_stack.make_user(team, "member")
    assert api.get(f"/teams/{team}/members", token=viewer).status_code == 200
    assert_error(api.put(f"/teams/{team}/members/admin", {"role": "member"}, token=viewer), 403, "forbidden",
                 mentions="viewer")
    assert_error(api.put(f"/teams/{team}/members/admin", {"role": "member"}, token=member), 403, "forbidden")
    assert_error(api.post("/teams", {"name": "sneaky-team"}, token=member), 403, "forbidden")
    assert_error(api.get("/users", token=member), 403, "forbidden")


def test_team_admin_manages_members_and_last_admin_is_kept(api, live_stack):
    team = live_stack.make_team()
    team_admin, _, admin_token = live_stack.make_user(team, "admin")
    newcomer, _, _ = live_stack.make_user()
    response = api.put(f"/teams/{team}/members/{newcomer}", {"role": "viewer"}, token=admin_token)
    assert response.status_code == 200 and response.get_json()["member"]["role"] == "viewer"
    members = {m["username"]: m["role"] for m in api.get(f"/teams/{team}/members").get_json()["members"]}
    assert members == {team_admin: "admin", newcomer: "viewer"}
    assert_error(api.put(f"/teams/{team}/members/{team_admin}", {"role": "member"}, token=admin_token),
                 409, "conflict", mentions="last admin")
    assert api.delete(f"/teams/{team}/members/{newcomer}", token=admin_token).status_code == 204
    assert_error(api.delete(f"/teams/{team}/members/{newcomer}", token=admin_token), 404, "not_found")


def test_member_of_team_a_cannot_see_team_b(api, live_stack):
    team_a, team_b = live_stack.make_team(), live_stack.make_team()
    _, _, token_a = live_stack.make_user(team_a, "admin")
    visible = [t["name"] for t in api.get("/teams", token=token_a).get_json()["teams"]]
    assert visible == [team_a]
    assert_error(api.get(f"/teams/{team_b}", token=token_a), 404, "not_found", mentions=team_b)
    assert_error(api.get(f"/teams/{team_b}/members", token=token_a), 404, "not_found")
    assert_error(api.put(f"/teams/{team_b}/members/admin", {"role": "viewer"}, token=token_a), 404, "not_found")
    # the refusal is indistinguishable from a team that does not exist
    missing = api.get("/teams/no-such-team-anywhere", token=token_a)
    assert missing.status_code == 404


def test_admin_creates_users_and_teams(api):
    team = api.post("/teams", {"name": "vision-lab", "description": "Cameras"})
    assert team.status_code == 201
    created = api.post("/users", {"username": "ada", "team": "vision-lab", "role": "member"})
    assert created.status_code == 201
    password = created.get_json()["password"]
    assert len(password) >= 16
    login = api.post("/auth/login", {"username": "ada", "password": password}, token=None)
    assert login.status_code == 201
    assert_error(api.post("/users", {"username": "ada"}), 409, "conflict", mentions="ada")
    assert_error(api.post("/teams", {"name": "vision-lab"}), 409, "conflict")


def test_bad_input_gets_clear_4xx(api, client, live_stack):
    malformed = client.post("/api/v1/tokens", data="{not json", content_type="application/json",
                            headers={"Authorization": f"Bearer {live_stack.admin_token}"})
    assert_error(malformed, 400, "invalid", mentions="not valid JSON")
    not_object = api.post("/tokens", [1, 2])
    assert_error(not_object, 400, "invalid", mentions="JSON object")
    unknown = api.post("/tokens", {"name": "x", "colour": "red"})
    assert_error(unknown, 400, "invalid", mentions="colour")
    wrong_type = api.post("/tokens", {"name": 5})
    assert_error(wrong_type, 400, "invalid", mentions="name")
    bad_expiry = api.post("/tokens", {"name": "x", "expires_in_days": -1})
    assert_error(bad_expiry, 400, "invalid", mentions="expires_in_days")
    bool_expiry = api.post("/tokens", {"name": "x", "expires_in_days": True})
    assert_error(bool_expiry, 400, "invalid")
    missing = api.post("/auth/login", {"username": "admin"}, token=None)
    assert_error(missing, 400, "invalid", mentions="password")
    bad_name = api.post("/users", {"username": "../etc"})
    assert_error(bad_name, 400, "invalid", mentions="username")
    bad_role = api.put("/teams/default/members/admin", {"role": "owner"})
    assert_error(bad_role, 400, "invalid", mentions="role")
    short_password = api.post("/users", {"username": "shorty", "password": "abc"})
    assert_error(short_password, 400, "invalid", mentions="password")


def test_oversized_body_is_413(client, live_stack):
    limit = live_stack.settings.max_body
    response = client.post("/api/v1/tokens", data=b"x" * (limit + 1), content_type="application/json",
                           headers={"Authorization": f"Bearer {live_stack.admin_token}"})
    assert_error(response, 413, "too_large", mentions=str(limit))


def test_unknown_api_route_and_method_are_json(api):
    assert_error(api.get("/no/such/route"), 404, "not_found")
    assert_error(api.call("PATCH", "/whoami"), 405, "method_not_allowed")


def test_debugger_is_off_and_errors_hide_tracebacks(app, api):
    assert app.debug is False
    body = api.get("/no/such/route").get_data(as_text=True)
    assert "Traceback" not in body and "werkzeug" not in body.lower()


def _csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_console_login_needs_csrf_and_session_writes_need_csrf(app, live_stack):
    client = app.test_client()
    no_csrf = client.post("/login", data={"username": "admin", "password": live_stack.admin_password})
    assert no_csrf.status_code == 400
    assert "CSRF" in no_csrf.get_data(as_text=True)
    page = client.get("/login").get_data(as_text=True)
    ok = client.post("/login", data={"username": "admin", "password": live_stack.admin_password,
                                     "csrf_token": _csrf_from(page)})
    assert ok.status_code == 302
    # the session authenticates API reads ...
    assert client.get("/api/v1/whoami").get_json()["user"]["username"] == "admin"
    # ... but a cookie-authenticated write without the CSRF header is refused
    assert_error(client.post("/api/v1/tokens", json={"name": "from-cookie"}), 400, "csrf")
    home = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', home).group(1)
    with_header = client.post("/api/v1/tokens", json={"name": "from-cookie"}, headers={"X-CSRFToken": token})
    assert with_header.status_code == 201
    logout = client.post("/logout", data={"csrf_token": token})
    assert logout.status_code == 302
    assert_error(client.get("/api/v1/whoami"), 401, "unauthenticated")


def test_console_wrong_password_and_redirects(app):
    client = app.test_client()
    assert client.get("/").status_code == 302  # to the login page
    page = client.get("/login").get_data(as_text=True)
    wrong = client.post("/login", data={"username": "admin", "password": "nope-nope", "csrf_token": _csrf_from(page)})
    assert wrong.status_code == 401 and "wrong username or password" in wrong.get_data(as_text=True)


def test_console_pages_render_for_admin_and_hide_admin_from_members(app, live_stack):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"username": "admin", "password": live_stack.admin_password,
                                "csrf_token": _csrf_from(page)})
    for path in ("/", "/settings/tokens", "/admin", "/teams/default", "/data", "/area/monitoring"):
        assert client.get(path).status_code == 200, path
    assert client.get("/area/nonsense").status_code == 404
    username, password, _ = live_stack.make_user()
    member = app.test_client()
    page = member.get("/login").get_data(as_text=True)
    member.post("/login", data={"username": username, "password": password, "csrf_token": _csrf_from(page)})
    assert member.get("/admin").status_code == 403
    assert member.get("/teams/default").status_code == 404


def test_login_redirect_is_not_open(app, live_stack):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login?next=//evil.example/x",
                           data={"username": "admin", "password": live_stack.admin_password,
                                 "csrf_token": _csrf_from(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/"
