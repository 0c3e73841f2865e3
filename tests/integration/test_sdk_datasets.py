"""The SDK's datasets on the real stack: folder uploads through builds, dedup, resume, parts,
split/derive/diff/tag, pandas and torch views over the local blob cache, and the CLI."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

OFFICINA = str(Path(sys.executable).parent / "officina")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Each test gets its own SDK cache (hashes, blobs, open uploads)."""
    path = tmp_path / "sdk-cache"
    monkeypatch.setenv("OFFICINA_CACHE_DIR", str(path))
    return path


@pytest.fixture
def team(live_stack):
    return live_stack.make_team()


def _write_digits(root: Path, count: int) -> Path:
    """``count`` digits as 16x16 PNGs in class folders, plus files an upload must skip."""
    digits = load_digits()
    for i in range(count):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((digits.images[i] * 15).astype(np.uint8)).resize((16, 16))
        image.save(folder / f"{i:04d}.png")
    (root / ".DS_Store").write_bytes(b"finder junk")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._0000.png").write_bytes(b"resource fork")
    return root


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    return _write_digits(tmp_path_factory.mktemp("digits"), 300)


def _csv(loader, path: Path) -> Path:
    loader(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(path, index=False)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count_file_requests(monkeypatch) -> list[str]:
    """Record every request the SDK makes for a version's file bytes."""
    from officina.sdk.client import Client

    seen: list[str] = []
    original = Client.request_raw

    def counting(self, method, path, **kwargs):
        if "/files/" in path:
            seen.append(f"{method} {path}")
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(Client, "request_raw", counting)
    return seen


def test_folder_upload_then_unchanged_reupload_moves_no_bytes(sdk_client, team, digits_dir):
    sdk = sdk_client
    first: dict = {}
    v1 = sdk.datasets.upload("digits", digits_dir, team=team, message="first", stats=first)
    assert v1.number == 1 and v1.kind == "images" and len(v1.files) == 300
    assert not [f for f in v1.files if f["path"].startswith((".", "__MACOSX")) or "/." in f["path"]]
    assert {f["label"] for f in v1.files} == {str(d) for d in range(10)}
    assert v1.files[0]["path"] == "0/0000.png"
    assert sum(v1.stats["label_distribution"].values()) == 300
    total = sum(p.stat().st_size for p in digits_dir.rglob("*.png") if "__MACOSX" not in p.parts)
    assert first["files_hashed"] == 300 and first["put_requests"] == 300
    assert first["bytes_sent"] == total == first["build"]["bytes_received"]

    again: dict = {}
    v2 = sdk.datasets.upload("digits", digits_dir, team=team, message="same files", stats=again)
    assert v2.number == 2 and v2.message == "same files"
    assert again["files_hashed"] == 0  # the local hash cache knew every file
    assert again["put_requests"] == 0 and again["bytes_sent"] == 0
    assert again["build"]["bytes_received"] == 0 and again["build"]["files_received"] == 300
    assert v1.diff(v2)["files"]["summary"] == {"added": 0, "removed": 0, "changed": 0, "relabeled": 0,
                                               "unchanged": 300}


def test_resume_sends_only_what_an_interrupted_upload_missed(sdk_client, team, tmp_path, cache_dir):
    from officina.sdk import uploads
    from officina.sdk.cache import Cache

    sdk = sdk_client
    folder = tmp_path / "blobs"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(20):
        (folder / f"f{i:02d}.bin").write_bytes(rng.bytes(int(rng.integers(1_000, 50_000))))
    paths = sorted(folder.iterdir())
    client = sdk.client()
    base = f"/teams/{team}/datasets/blobs"
    build = client.post(f"{base}/uploads", {"kind": "files"})["build"]
    declared = client.post(f"/builds/{build['id']}/files", {"files": [
        {"path": p.name, "sha256": _sha(p), "size": p.stat().st_size} for p in paths]})
    assert sorted(declared["missing"]) == [p.name for p in paths]
    for p in paths[:10]:
        client.request("PUT", f"/builds/{build['id']}/files/{p.name}", data=p.read_bytes(),
                       headers={"Content-Type": "application/octet-stream", "X-Content-SHA256": _sha(p)})
    # what an interrupted sdk.datasets.upload leaves behind: the open build, remembered locally
    Cache(cache_dir).remember_build(uploads.resume_key(client, team, "blobs", folder), build["id"], {"kind": "files"})

    stats: dict = {}
    version = sdk.datasets.upload("blobs", folder, team=team, kind="files", stats=stats)
    assert stats["resumed"] and stats["build"]["id"] == build["id"]
    assert stats["put_requests"] == 10
    assert stats["bytes_sent"] == sum(p.stat().st_size for p in paths[10:])
    assert version.number == 1 and version.kind == "files"
    assert {f["path"]: f["sha256"] for f in version.files} == {p.name: _sha(p) for p in paths}
    assert Cache(cache_dir).open_build(uploads.resume_key(client, team, "blobs", folder)) is None


def test_an_interrupted_sdk_upload_resumes_and_a_changed_folder_starts_over(sdk_client, team, tmp_path,
                                                                            monkeypatch):
    from officina.sdk import uploads

    sdk = sdk_client
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(12):
        (folder / f"doc{i:02d}.txt").write_text(f"document {i}\n" * (100 + i))
    real, calls, limit = uploads._with_retries, [], [5]
    monkeypatch.setattr(uploads, "BATCH_FILE_MAX", 0)  # one request per file, to stop between files

    def interrupted(call):
        if len(calls) == limit[0]:
            raise KeyboardInterrupt
        calls.append(1)
        return real(call)

    monkeypatch.setattr(uploads, "_with_retries", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sdk.datasets.upload("docs", folder, team=team, kind="files", parallel=1)
    monkeypatch.setattr(uploads, "_with_retries", real)
    stats: dict = {}
    version = sdk.datasets.upload("docs", folder, team=team, kind="files", stats=stats)
    assert stats["resumed"] and stats["put_requests"] == 7 and version.number == 1

    monkeypatch.setattr(uploads, "_with_retries", interrupted)
    calls.clear()
    limit[0] = 1  # doc00.txt is sent (largest first), then the upload stops
    (folder / "doc00.txt").write_text("edited\n")
    (folder / "doc12.txt").write_text("new\n")
    with pytest.raises(KeyboardInterrupt):
        sdk.datasets.upload("docs", folder, team=team, kind="files", parallel=1)
    monkeypatch.setattr(uploads, "_with_retries", real)
    (folder / "doc12.txt").unlink()  # the open build declared a file that is gone now
    stats.clear()
    version = sdk.datasets.upload("docs", folder, team=team, kind="files", stats=stats)
    assert not stats["resumed"] and stats["put_requests"] == 1  # a fresh build; only doc00.txt is new
    assert version.number == 2 and len(version.files) == 12
    assert version.read("doc00.txt") == b"edited\n"
    builds = sdk.datasets.builds("docs", team=team)
    assert sorted(b["status"] for b in builds) == ["aborted", "done", "done"]


def test_large_file_goes_in_parts_and_resumes_by_part(sdk_client, team, tmp_path, cache_dir):
    from officina.sdk import uploads
    from officina.sdk.cache import Cache, hash_file

    sdk = sdk_client
    folder = tmp_path / "big"
    folder.mkdir()
    big = folder / "weights.bin"
    big.write_bytes(os.urandom(70_000_000))
    (folder / "README.txt").write_text("a big file and a small one\n")
    client = sdk.client()
    build = client.post(f"/teams/{team}/datasets/big/uploads", {"kind": "files"})["build"]
    part_size = build["part_size"]
    assert part_size < big.stat().st_size, "the server's part_size is larger than this test's file"
    digest = hash_file(big, part_size)
    count = len(digest.parts)
    assert count >= 2
    client.post(f"/builds/{build['id']}/files", {"files": [
        {"path": "weights.bin", "sha256": digest.sha256, "size": digest.size}]})
    with open(big, "rb") as fh:
        answer = client.request("PUT", f"/builds/{build['id']}/files/weights.bin", params={"part": 1, "parts": count},
                                data=fh.read(part_size), headers={"X-Content-SHA256": digest.parts[0],
                                                                  "Content-Type": "application/octet-stream"})
    assert answer["received_parts"] == [1]
    Cache(cache_dir).remember_build(uploads.resume_key(client, team, "big", folder), build["id"], {"kind": "files"})

    stats: dict = {}
    version = sdk.datasets.upload("big", folder, team=team, kind="files", stats=stats)
    assert stats["resumed"]
    assert stats["put_requests"] == (count - 1) + 1  # the other parts, and README.txt
    assert stats["bytes_sent"] == big.stat().st_size - part_size + (folder / "README.txt").stat().st_size
    files = {f["path"]: f for f in version.files}
    assert files["weights.bin"]["sha256"] == digest.sha256 and files["weights.bin"]["size"] == 70_000_000
    out = version.download(tmp_path / "out")
    assert _sha(out / "weights.bin") == digest.sha256

    again: dict = {}
    assert sdk.datasets.upload("big", folder, team=team, kind="files", stats=again).number == 2
    assert again["bytes_sent"] == 0 and again["files_hashed"] == 0


def test_split_then_rows_of_each_split(sdk_client, team, tmp_path):
    sdk = sdk_client
    v1 = sdk.datasets.upload("cancer", _csv(load_breast_cancer, tmp_path / "cancer.csv"), team=team)
    assert v1.kind == "tabular" and v1.row_count == 569 and v1.files[0]["path"] == "cancer.csv"
    with pytest.raises(sdk.NotFound):
        v1.splits()
    v2 = v1.split({"train": 0.8, "val": 0.1, "test": 0.1}, seed=3, message="first split")
    assert v2.number == 2 and v2.parent == 1 and v2.origin["source"] == "split"
    params = v2.origin["split"]
    assert (params["fractions"], params["seed"], params["stratify"]) == ({"train": 0.8, "val": 0.1, "test": 0.1},
                                                                         3, True)
    assert v2.files == v1.files  # no bytes copied
    counts = {name: info["count"] for name, info in v2.split_summary.items()}
    assert sum(counts.values()) == 569
    whole = v2.to_pandas()
    rows = v2.splits()
    assert sorted(sum(rows.values(), [])) == list(range(569))
    for name, fraction in {"train": 0.8, "val": 0.1, "test": 0.1}.items():
        part = v2.to_pandas(split=name)
        assert len(part) == counts[name] == len(rows[name])
        assert abs(len(part) - fraction * 569) <= 2
        assert part.equals(whole.iloc[rows[name]].reset_index(drop=True))
    train = v2.to_pandas(split="train")
    assert abs(train["label"].mean() - whole["label"].mean()) < 0.01  # stratified by the label
    same = sdk.datasets.get("cancer", 1, team=team).split({"train": 0.8, "val": 0.1, "test": 0.1}, seed=3)
    assert same.splits() == rows  # the same seed gives the same assignment
    with pytest.raises(sdk.InvalidRequest, match="no split 'holdout'"):
        v2.to_pandas(split="holdout")


def test_derive_diff_tags_and_lineage(sdk_client, team, tmp_path):
    sdk = sdk_client
    v1 = sdk.datasets.upload("wine", _csv(load_wine, tmp_path / "wine.csv"), team=team)
    frame = v1.to_pandas()
    v2 = v1.derive(filter=[("alcohol", ">", 13.0)], message="strong wines")
    assert v2.number == 2 and v2.parent == 1 and v2.origin["source"] == "derive"
    assert v2.row_count == int((frame["alcohol"] > 13.0).sum())
    assert (v2.to_pandas()["alcohol"] > 13.0).all()
    change = sdk.datasets.diff("wine", 1, 2, team=team)
    assert change["rows"]["removed"] == 178 - v2.row_count and change["rows"]["added"] == 0
    assert v1.diff(v2)["rows"] == change["rows"]

    assert v1.tag("golden")["version"] == 1
    assert sdk.datasets.get("wine", "golden", team=team).number == 1
    sdk.datasets.tag("wine", "golden", 2, team=team)
    assert sdk.datasets.get("wine", "golden", team=team).number == 2
    assert "golden" in sdk.datasets.get("wine", 2, team=team).tags
    with pytest.raises(sdk.InvalidRequest):
        sdk.datasets.tag("wine", "latest", 1, team=team)
    sdk.datasets.untag("wine", "golden", team=team)
    with pytest.raises(sdk.NotFound):
        sdk.datasets.get("wine", "golden", team=team)

    lineage = v2.lineage()
    assert lineage["derived_from"] == {"dataset": "wine", "version": 1}
    assert {"dataset": "wine", "version": 2} in v1.lineage()["derived"]
    v2.record_use("run", "run-42", role="train")
    v2.record_use("run", "run-42", role="train")  # a no-op
    used = v2.lineage()["used_by"]
    assert [(u["consumer_kind"], u["consumer_id"], u["role"]) for u in used] == [("run", "run-42", "train")]


def test_relabel_and_remove_images(sdk_client, team, tmp_path):
    sdk = sdk_client
    v1 = sdk.datasets.upload("few", _write_digits(tmp_path / "few", 40), team=team)
    first, second = v1.files[0], v1.files[1]
    v2 = v1.derive(relabel={first["path"]: "7"}, remove=[second["path"]])
    files = {f["path"]: f for f in v2.files}
    assert files[first["path"]]["label"] == "7" and second["path"] not in files
    summary = v1.diff(v2)["files"]["summary"]
    assert summary["relabeled"] == 1 and summary["removed"] == 1 and summary["unchanged"] == 38
    v3 = sdk.datasets.upload("few", None, team=team, base=2, remove=[first["path"]])
    assert len(v3.files) == 38 and first["path"] not in {f["path"] for f in v3.files}


def _to_tensor(image):
    """PIL image → float32 CHW tensor in [0, 1] (what torchvision's ToTensor does), with numpy."""
    import torch

    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def test_torch_dataset_over_digits_reads_the_local_cache(sdk_client, team, digits_dir, monkeypatch):
    import torch
    from torch.utils.data import DataLoader, Dataset

    sdk = sdk_client
    version = sdk.datasets.upload("digits", digits_dir, team=team).split(seed=0)
    train_count = version.split_summary["train"]["count"]
    requests = _count_file_requests(monkeypatch)
    train = version.torch(split="train", transform=_to_tensor)
    assert isinstance(train, Dataset)
    assert len(train) == train_count == len(version.splits()["train"])
    assert train.classes == [str(d) for d in range(10)]
    image, label = train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and 0 <= float(image.min())
    assert train.classes[label] == {f["path"]: f["label"] for f in version.files}[version.splits()["train"][0]]
    images, labels = next(iter(DataLoader(train, batch_size=8, shuffle=True)))
    assert images.shape == (8, 3, 16, 16) and labels.dtype == torch.int64
    assert len(requests) == train_count  # each file fetched once

    requests.clear()
    again = version.torch(split="train", transform=_to_tensor)
    assert requests == []  # a second dataset over the same files reads the local blob cache
    assert torch.equal(again[5][0], train[5][0])
    everything = version.torch()
    assert len(everything) == 300 and everything[0][0].mode == "RGB"
    assert len(requests) == 300 - train_count  # only the files of the other splits were new
    requests.clear()
    version.torch(split="test")
    sdk.datasets.get("digits", version.number, team=team).torch(split="val")
    assert requests == []  # everything is in the local blob cache now


def test_torch_dataset_over_a_table(sdk_client, team, tmp_path):
    import torch

    sdk = sdk_client
    version = sdk.datasets.upload("cancer", _csv(load_breast_cancer, tmp_path / "c.csv"), team=team)
    data = version.torch()
    assert len(data) == 569 and data.classes == [0, 1] and len(data.features) == 30
    x, y = data[0]
    assert x.dtype == torch.float32 and x.shape == (30,) and y in (0, 1)
    assert float(x[0]) == pytest.approx(float(version.to_pandas()["mean radius"][0]))


def test_cli_upload_show_split_tag_download(sdk_client, live_stack, team, tmp_path, cache_dir):
    from officina.infra.cli import main

    csv = _csv(load_wine, tmp_path / "wine.csv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICINA_")}
    env.update(OFFICINA_URL=live_stack.url, OFFICINA_TOKEN=live_stack.admin_token,
               OFFICINA_CACHE_DIR=str(cache_dir))
    done = subprocess.run([OFFICINA, "datasets", "upload", "wine", str(csv), "--team", team, "-m", "from the shell"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wine version 1" in done.stdout and "tabular" in done.stdout

    runner = CliRunner()
    shown = runner.invoke(main, ["datasets", "show", "wine", "--team", team])
    assert shown.exit_code == 0, shown.output
    assert "from the shell" in shown.output and "178 rows" in shown.output
    split = runner.invoke(main, ["datasets", "split", "wine", "--team", team, "--version", "1", "--train", "0.5",
                                 "--val", "0.25", "--test", "0.25", "--seed", "1"])
    assert split.exit_code == 0, split.output
    assert "wine version 2" in split.output and "train:" in split.output
    tagged = runner.invoke(main, ["datasets", "tag", "wine", "golden", "1", "--team", team])
    assert tagged.exit_code == 0 and "golden → version 1" in tagged.output
    listed = runner.invoke(main, ["datasets", "list", "--team", team])
    assert listed.exit_code == 0 and listed.output.startswith("wine\t")
    diff = runner.invoke(main, ["datasets", "diff", "wine", "1", "2", "--team", team])
    assert diff.exit_code == 0 and "rows: 0 added, 0 removed, 178 unchanged" in diff.output
    out = tmp_path / "out"
    fetched = runner.invoke(main, ["datasets", "download", "wine", str(out), "--version", "golden", "--team", team])
    assert fetched.exit_code == 0, fetched.output
    assert (out / "wine.csv").read_bytes() == csv.read_bytes()

    missing = runner.invoke(main, ["datasets", "upload", "wine", str(tmp_path / "nope.csv"), "--team", team])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    unknown = runner.invoke(main, ["datasets", "show", "no-such-data", "--team", team])
    assert unknown.exit_code == 1 and "not found" in unknown.output.lower()
    assert unknown.exception is None or isinstance(unknown.exception, SystemExit)


def test_bad_input_gets_clear_errors(sdk_client, team, tmp_path):
    sdk = sdk_client
    with pytest.raises(FileNotFoundError, match="nope"):
        sdk.datasets.upload("x", tmp_path / "nope", team=team)
    with pytest.raises(sdk.InvalidRequest, match="'a/b'"):
        sdk.datasets.upload("a/b", _csv(load_wine, tmp_path / "w.csv"), team=team)
    with pytest.raises(sdk.InvalidRequest, match="'a/b'"):
        sdk.datasets.get("a/b", team=team)
    empty = tmp_path / "empty"
    (empty / ".hidden").mkdir(parents=True)
    (empty / ".hidden" / "x.txt").write_text("x")
    with pytest.raises(sdk.InvalidRequest, match="no files"):
        sdk.datasets.upload("x", empty, team=team)
    with pytest.raises(sdk.InvalidRequest) as failed:  # the build fails; its message comes back typed
        sdk.datasets.upload("wine", tmp_path / "w.csv", team=team, label_column="species")
    assert "species" in str(failed.value) and failed.value.build["status"] == "failed"
    with pytest.raises(sdk.NotFound):  # a failed build leaves no version
        sdk.datasets.get("wine", team=team)
