"""``sdk.submit`` and ``officina submit`` against the live server: packing, git, follow, cancel."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

OFFICINA = str(Path(sys.executable).parent / "officina")


@pytest.fixture
def team(live_stack):
    return live_stack.make_team()


@pytest.fixture
def code(tmp_path):
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("import json, os\nfrom pkg.helper import greet\n"
                                   "print(greet(json.loads(os.environ['OFFICINA_PARAMS'])['who']))\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helper.py").write_text("def greet(who):\n    return f'hello {who}'\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(os.urandom(1024))
    (root / "secret.env").write_text("TOKEN=do-not-ship\n")
    (root / ".gitignore").write_text("data/\n*.env\n")
    return root


def test_submit_packs_the_code_dir_honouring_gitignore_and_records_git(sdk_client, team, code):
    sdk = sdk_client
    if shutil.which("git"):
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@x"}
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "first"]):
            subprocess.run(["git", "-C", str(code), *args], check=True, env=env, capture_output=True)
        (code / "pkg" / "helper.py").write_text("def greet(who):\n    return f'hello there {who}'\n")  # dirty
    sha, _, paths = sdk.jobs.pack(code)
    assert sorted(paths) == [".gitignore", "pkg/__init__.py", "pkg/helper.py", "train.py"]
    assert sdk.jobs.pack(code)[0] == sha  # deterministic: the same code is stored once
    job = sdk.submit("train.py", code_dir=code, params={"who": "officina"}, team=team, project="sdk")
    job.wait(timeout=60)
    assert job.status == "succeeded", job.data
    lines = list(job.logs())
    assert "hello there officina" in lines if shutil.which("git") else "hello officina" in lines
    if shutil.which("git"):
        git = job.data["spec"]["git"]
        assert git["dirty"] is True and len(git["commit"]) == 40 and "hello there" in git["diff"]


def test_follow_logs_and_cancel(sdk_client, team, tmp_path):
    sdk = sdk_client
    (tmp_path / "slow.py").write_text("import time\nfor i in range(600):\n    print('tick', i, flush=True)\n"
                                      "    time.sleep(0.1)\n")
    job = sdk.submit("slow.py", code_dir=tmp_path, team=team)
    seen = []
    for line in job.logs(follow=True):
        seen.append(line)
        if line == "tick 5":
            job.cancel()
    assert "tick 5" in seen and job.wait(timeout=30).data["state"] == "cancelled"
    assert "tick 599" not in seen  # stopped long before the script's end


def test_sdk_bad_input(sdk_client, team, code, tmp_path):
    sdk = sdk_client
    with pytest.raises(sdk.InvalidRequest, match="not in"):
        sdk.submit("missing.py", code_dir=code, team=team)
    with pytest.raises(sdk.InvalidRequest, match="ignored"):
        sdk.submit("data/big.bin", code_dir=code, team=team)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (code / "link.txt").symlink_to(outside)
    with pytest.raises(sdk.InvalidRequest, match="links outside"):
        sdk.submit("train.py", code_dir=code, team=team)
    with pytest.raises(sdk.InvalidRequest, match="timeout"):
        (code / "link.txt").unlink()
        sdk.submit("train.py", code_dir=code, team=team, timeout="forever")


def test_cli_submit_follow(live_stack, team, code):
    env = {**os.environ, "OFFICINA_URL": live_stack.url, "OFFICINA_TOKEN": live_stack.admin_token}
    result = subprocess.run([OFFICINA, "submit", "train.py", "--code-dir", str(code), "-p", "who=cli", "--team", team,
                             "--follow"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hello cli" in result.stdout and "succeeded" in result.stderr
    listed = subprocess.run([OFFICINA, "jobs", "list", "--team", team], capture_output=True, text=True, env=env,
                            timeout=60)
    assert listed.returncode == 0 and "succeeded" in listed.stdout
    bad = subprocess.run([OFFICINA, "submit", "nope.py", "--code-dir", str(code), "--team", team],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "nope.py" in bad.stderr and "Traceback" not in bad.stderr
