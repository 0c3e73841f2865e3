"""The SDK installs on its own, with small client-side dependencies and nothing of the server."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_sdk_pyproject_depends_only_on_small_client_libraries():
    project = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    # HTTP, the command line, and .gitignore matching for code bundles: nothing of the server
    assert sorted(d.split(">")[0].split("=")[0] for d in project["dependencies"]) == ["click", "pathspec",
                                                                                      "requests"]


@pytest.mark.slow
def test_sdk_installs_alone_into_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT / "sdk")],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout
    names = {line.split("==")[0].lower() for line in installed.split()}
    assert "officina-sdk" in names and "requests" in names
    assert not names & {"flask", "celery", "psycopg", "torch", "minio", "officina"}
    probe = ("import sys; from officina import sdk; "
             "assert not any(m.split('.')[0] in {'flask','celery','psycopg','torch'} for m in sys.modules); "
             "import officina; assert not hasattr(officina, 'platform'); print(sdk.__version__)")
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0.1.0"
