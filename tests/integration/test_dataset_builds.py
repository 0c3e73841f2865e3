"""Dataset builds on the real stack: resumable uploads, derive, split, diff, tags, lineage and GC.

The web app runs in this process; builds run on the live stack's real Celery worker (``io`` queue).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

from checks import assert_error


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((image * 15).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def _digit_files(count: int = 120, flat: bool = False) -> dict[str, bytes]:
    digits = load_digits()
    if flat:
        files = {f"{i:04d}.png": _png(digits.images[i]) for i in range(count)}
        files["labels.csv"] = ("file,label\n" + "".join(f"{i:04d}.png,{digits.target[i]}\n"
                                                        for i in range(count))).encode()
        return files
    return {f"{digits.target[i]}/{i:04d}.png": _png(digits.images[i]) for i in range(count)}


def _cancer_csv() -> bytes:
    return load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(index=False).encode()


class Builds:
    """The builds protocol spoken through the test client."""

    def __init__(self, api, team: str):
        self.api, self.team = api, team

    def base(self, name: str) -> str:
        return f"/teams/{self.team}/datasets/{name}"

    def open(self, name: str, token="default", **options) -> dict:
        response = self.api.post(f"{self.base(name)}/uploads", options, token=token)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["build"]

    def declare(self, build_id: str, files: dict[str, bytes]) -> list[str]:
        listing = [{"path": p, "sha256": _sha(d), "size": len(d)} for p, d in files.items()]
        response = self.api.post(f"/builds/{build_id}/files", {"files": listing})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["missing"]

    def put(self, build_id: str, path: str, data: bytes, **query):
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return self.api.call("PUT", f"/builds/{build_id}/files/{path}" + (f"?{qs}" if qs else ""), data=data,
                             headers={"X-Content-SHA256": _sha(data)}, content_type="application/octet-stream")

    def commit(self, build_id: str):
        return self.api.post(f"/builds/{build_id}/commit")

    def wait(self, build_id: str, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            build = self.api.get(f"/builds/{build_id}").get_json()["build"]
            if build["status"] in ("done", "failed"):
                return build
            time.sleep(0.2)
        raise AssertionError(f"build {build_id} did not finish: {build}")

    def upload(self, name: str, files: dict[str, bytes], **options) -> dict:
        """Open, declare, send what is missing, commit and wait; return the finished build."""
        build = self.open(name, **options)
        for path in self.declare(build["id"], files):
            response = self.put(build["id"], path, files[path])
            assert response.status_code == 200, response.get_data(as_text=True)
        response = self.commit(build["id"])
        assert response.status_code == 202, response.get_data(as_text=True)
        return self.wait(build["id"])

    def version(self, name: str, ref) -> dict:
        response = self.api.get(f"{self.base(name)}/versions/{ref}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["version"]

    def start(self, name: str, ref, op: str, body: dict) -> dict:
        response = self.api.post(f"{self.base(name)}/versions/{ref}/{op}", body)
        assert response.status_code == 202, response.get_data(as_text=True)
        return self.wait(response.get_json()["build"]["id"])


@pytest.fixture
def team(live_stack):
    return live_stack.make_team()


@pytest.fixture
def builds(api, team):
    return Builds(api, team)


def test_folder_upload_labels_stats_and_dedup_on_reupload(builds):
    files = _digit_files()
    done = builds.upload("digits", files, message="first import")
    assert done["status"] == "done", done
    assert done["version"] == 1 and done["bytes_received"] == sum(len(d) for d in files.values())
    version = builds.version("digits", 1)
    assert version["kind"] == "images" and version["file_count"] == 120
    assert sum(version["stats"]["label_distribution"].values()) == 120
    assert version["stats"]["width"] == {"min": 8, "max": 8, "mean": 8.0}
    assert len(version["preview"]["thumbnails"]) == 32
    assert {f["label"] for f in version["files"]} == {str(d) for d in range(10)}

    again = builds.open("digits")
    assert builds.declare(again["id"], files) == []  # every blob is known: nothing to send
    assert builds.commit(again["id"]).status_code == 202
    second = builds.wait(again["id"])
    assert second["status"] == "done" and second["version"] == 2 and second["bytes_received"] == 0
    assert builds.version("digits", 2)["manifest_sha256"] == version["manifest_sha256"]


def test_flat_images_with_labels_csv_text_jsonl_and_parquet(builds):
    flat = builds.upload("flat", _digit_files(40, flat=True))
    assert flat["status"] == "done", flat
    files = builds.version("flat", 1)["files"]
    assert len(files) == 40 and all(f["label"] is not None for f in files)  # the CSV became labels

    wine = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    parquet = io.BytesIO()
    wine.to_parquet(parquet, index=False)
    done = builds.upload("wine", {"wine.parquet": parquet.getvalue()})
    assert done["status"] == "done", done
    version = builds.version("wine", 1)
    assert version["format"] == "parquet" and version["row_count"] == 178 and version["label_column"] == "label"

    lines = [{"text": f"review number {i} is {'good' if i % 3 else 'bad'}", "label": "pos" if i % 3 else "neg"}
             for i in range(90)]
    jsonl = "\n".join(json.dumps(r) for r in lines).encode()
    done = builds.upload("reviews", {"reviews.jsonl": jsonl})
    assert done["status"] == "done", done
    version = builds.version("reviews", 1)
    assert version["kind"] == "text" and version["text_column"] == "text"
    assert version["stats"]["label_distribution"] == {"pos": 60, "neg": 30}


def test_zip_archive_through_a_build(builds):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path, data in _digit_files(50).items():
            archive.writestr(f"digits/{path}", data)
    done = builds.upload("zipped", {"digits.zip": buf.getvalue()})
    assert done["status"] == "done", done
    version = builds.version("zipped", 1)
    assert version["file_count"] == 50 and version["format"] == "zip"


def test_resume_large_file_in_parts(builds, live_stack):
    part_size = builds.open("probe")["part_size"]
    big = os.urandom(part_size + 12345)
    small = {"notes/readme.txt": b"raw files dataset\n", "data/a.bin": os.urandom(5000)}
    build = builds.open("raw", kind="files")
    missing = builds.declare(build["id"], {**small, "data/big.bin": big})
    assert sorted(missing) == ["data/a.bin", "data/big.bin", "notes/readme.txt"]
    assert builds.put(build["id"], "notes/readme.txt", small["notes/readme.txt"]).status_code == 200
    first = builds.put(build["id"], "data/big.bin", big[:part_size], part=1, parts=2)
    assert first.status_code == 200 and first.get_json()["received_parts"] == [1]
    # commit refuses while something is missing, naming it
    assert_error(builds.commit(build["id"]), 400, "invalid", mentions="has not arrived")

    # "interrupted": a new client asks what arrived and sends only the rest
    state = builds.api.get(f"/builds/{build['id']}?files=1").get_json()
    received = {f["path"] for f in state["files"] if f["received"]}
    assert received == {"notes/readme.txt"} and state["parts"] == {"data/big.bin": [1]}
    assert_error(builds.put(build["id"], "data/big.bin", big[part_size:part_size + 10], part=2, parts=2),
                 400, "invalid", mentions="must be 12345 bytes")
    assert builds.put(build["id"], "data/big.bin", big[part_size:], part=2, parts=2).status_code == 200
    assert builds.put(build["id"], "data/a.bin", small["data/a.bin"]).status_code == 200
    assert builds.commit(build["id"]).status_code == 202
    done = builds.wait(build["id"])
    assert done["status"] == "done", done
    version = builds.version("raw", 1)
    assert version["kind"] == "files" and version["file_count"] == 3
    assert version["stats"]["extensions"] == {"bin": 2, "txt": 1}
    raw = builds.api.get(f"{builds.base('raw')}/versions/1/files/data/big.bin")
    assert raw.status_code == 200 and _sha(raw.data) == _sha(big)
    assert not list(live_stack.services.store.list(f"uploads/{build['id']}/"))  # staged parts cleaned up


def test_parts_that_do_not_add_up_fail_the_build_without_a_version(builds):
    part_size = builds.open("probe")["part_size"]
    big = os.urandom(part_size + 10)
    build = builds.open("liar", kind="files")
    listing = [{"path": "big.bin", "sha256": _sha(b"something else"), "size": len(big)}]
    assert builds.api.post(f"/builds/{build['id']}/files", {"files": listing}).get_json()["missing"] == ["big.bin"]
    builds.put(build["id"], "big.bin", big[:part_size], part=1, parts=2)
    builds.put(build["id"], "big.bin", big[part_size:], part=2, parts=2)
    assert builds.commit(build["id"]).status_code == 202
    failed = builds.wait(build["id"])
    assert failed["status"] == "failed" and "big.bin" in failed["error"]["message"], failed
    assert builds.api.get(builds.base("liar")).status_code == 404  # no dataset, no version


def test_failed_parse_leaves_no_version(builds):
    ragged = b"a,b,label\n1,2,0\n3,4,5,6\n"
    failed = builds.upload("ragged", {"ragged.csv": ragged})
    assert failed["status"] == "failed" and "line 3" in failed["error"]["message"], failed
    assert builds.api.get(builds.base("ragged")).status_code == 404
    wrong_label = builds.upload("cancer", {"c.csv": _cancer_csv()}, label_column="nope")
    assert wrong_label["status"] == "failed" and "nope" in wrong_label["error"]["message"]


def test_upload_bad_input(builds, api, live_stack, team):
    build = builds.open("bad")
    bid = build["id"]
    assert_error(api.post(f"/builds/{bid}/files", {"files": [{"path": "../x", "sha256": "0" * 64, "size": 1}]}),
                 400, "invalid", mentions="..")
    assert_error(api.post(f"/builds/{bid}/files", {"files": [{"path": "a", "sha256": "xyz", "size": 1}]}),
                 400, "invalid", mentions="sha256")
    twice = [{"path": "a.txt", "sha256": "0" * 64, "size": 1}, {"path": "a.txt", "sha256": "1" * 64, "size": 1}]
    assert_error(api.post(f"/builds/{bid}/files", {"files": twice}), 400, "invalid", mentions="duplicate path")
    builds.declare(bid, {"a.txt": b"alpha"})
    assert_error(api.post(f"/builds/{bid}/files", {"files": [{"path": "a.txt", "sha256": "1" * 64, "size": 5}]}),
                 400, "invalid", mentions="duplicate path")
    lying = api.call("PUT", f"/builds/{bid}/files/a.txt", data=b"alpha", content_type="application/octet-stream",
                     headers={"X-Content-SHA256": _sha(b"beta")})
    assert_error(lying, 400, "invalid", mentions="X-Content-SHA256")
    assert_error(builds.put(bid, "a.txt", b"other bytes"), 400, "invalid", mentions="declared")
    assert_error(builds.commit(bid), 400, "invalid", mentions="a.txt")
    huge = [{"path": "huge.bin", "sha256": "2" * 64, "size": live_stack.settings.max_file + 1}]
    assert_error(api.post(f"/builds/{bid}/files", {"files": huge}), 413, "too_large", mentions="OFFICINA_MAX_FILE")
    too_big_part = b"\0" * (live_stack.settings.max_body + 1)
    assert_error(builds.put(bid, "big.bin", too_big_part), 413, "too_large")
    assert_error(api.post(f"{builds.base('bad')}/uploads", {"kind": "video"}), 400, "invalid", mentions="kind")
    assert_error(api.post(f"/teams/{team}/datasets/bad%20name!/uploads", {}), 400, "invalid", mentions="name")
    assert_error(api.get("/builds/not-a-build"), 404, "not_found")
    # another team's build is invisible; a viewer cannot upload
    other_token = live_stack.make_user(live_stack.make_team())[2]
    assert_error(api.get(f"/builds/{bid}", token=other_token), 404, "not_found")
    assert_error(api.post(f"/builds/{bid}/files", {"files": [{"path": "b", "sha256": "0" * 64, "size": 1}]},
                          token=other_token), 404, "not_found")
    viewer_token = live_stack.make_user(team, role="viewer")[2]
    assert_error(api.post(f"{builds.base('bad')}/uploads", {}, token=viewer_token), 403, "forbidden")
    # abort: the build takes no more files
    assert api.delete(f"/builds/{bid}").status_code == 204
    assert_error(builds.put(bid, "a.txt", b"alpha"), 409, "conflict", mentions="aborted")
    empty = builds.open("empty")
    assert_error(builds.commit(empty["id"]), 400, "invalid", mentions="no files")


def test_add_and_remove_files_on_a_base_version(builds):
    files = _digit_files(60)
    assert builds.upload("digits", files)["status"] == "done"
    gone = sorted(files)[:5]
    extra = {f"7/extra{i}.png": _png(np.full((8, 8), i % 16)) for i in range(3)}
    done = builds.upload("digits", extra, base="1", remove=gone)
    assert done["status"] == "done", done
    version = builds.version("digits", 2)
    assert version["file_count"] == 58 and version["parent"] == 1
    paths = {f["path"] for f in version["files"]}
    assert not paths & set(gone) and set(extra) <= paths
    assert_error(builds.api.post(f"{builds.base('digits')}/uploads", {"base": "1", "remove": ["nope.png"]}),
                 400, "invalid", mentions="nope.png")


def test_derive_relabel_remove_and_filter_rows(builds, api):
    assert builds.upload("digits", _digit_files(60))["status"] == "done"
    v1 = builds.version("digits", 1)
    first, second = v1["files"][0]["path"], v1["files"][1]["path"]
    done = builds.start("digits", 1, "derive", {"relabel": {first: "relabeled"}, "remove": [second],
                                                "message": "fix a label"})
    assert done["status"] == "done", done
    v2 = builds.version("digits", done["version"])
    assert v2["file_count"] == 59 and v2["origin"]["source"] == "derive" and v2["parent"] == 1
    assert v2["stats"]["label_distribution"]["relabeled"] == 1
    diff = api.get(f"{builds.base('digits')}/diff?from=1&to=2").get_json()
    assert diff["files"]["summary"] == {"added": 0, "removed": 1, "changed": 0, "relabeled": 1, "unchanged": 58}
    assert diff["files"]["relabeled"][0]["new_label"] == "relabeled" and diff["rows"] is None

    assert builds.upload("cancer", {"breast_cancer.csv": _cancer_csv()})["status"] == "done"
    done = builds.start("cancer", "latest", "derive", {"filter": [{"column": "mean radius", "op": ">", "value": 15}]})
    assert done["status"] == "done", done
    frame = load_breast_cancer(as_frame=True).frame
    kept = int((frame["mean radius"] > 15).sum())
    v2 = builds.version("cancer", 2)
    assert v2["row_count"] == kept and v2["stats"]["column_stats"][0]["min"] > 15
    diff = api.get(f"{builds.base('cancer')}/diff?from=1&to=2").get_json()
    assert diff["rows"]["removed"] == 569 - kept and diff["rows"]["added"] == 0
    assert diff["files"]["summary"]["changed"] == 1
    assert diff["stats"]["from"]["rows"] == 569 and diff["stats"]["to"]["rows"] == kept
    relabel = builds.start("cancer", 2, "derive", {"label_column": "mean texture"})
    assert builds.version("cancer", relabel["version"])["label_column"] == "mean texture"

    base = builds.base("cancer")
    assert_error(api.post(f"{base}/versions/1/derive", {"filter": [{"column": "nope", "op": ">", "value": 1}]}),
                 400, "invalid", mentions="nope")
    assert_error(api.post(f"{base}/versions/1/derive", {"filter": [{"column": "mean radius", "op": "~", "value": 1}]}),
                 400, "invalid", mentions="op")
    assert_error(api.post(f"{base}/versions/1/derive", {"relabel": {"x": "y"}}), 400, "invalid", mentions="filter")
    assert_error(api.post(f"{base}/versions/1/derive", {}), 400, "invalid", mentions="nothing to derive")
    assert_error(api.post(f"{base}/versions/9/derive", {"label_column": "label"}), 404, "not_found")
    empty = builds.start("cancer", 1, "derive", {"filter": [{"column": "mean radius", "op": ">", "value": 1e9}]})
    assert empty["status"] == "failed" and "no rows" in empty["error"]["message"]


def test_split_is_seeded_stratified_and_recorded(builds, api):
    assert builds.upload("cancer", {"breast_cancer.csv": _cancer_csv()})["status"] == "done"
    body = {"fractions": {"train": 0.8, "val": 0.1, "test": 0.1}, "seed": 7}
    done = builds.start("cancer", 1, "split", body)
    assert done["status"] == "done", done
    version = builds.version("cancer", done["version"])
    counts = {k: v["count"] for k, v in version["splits"].items()}
    assert list(counts.items()) == [("train", 455), ("val", 57), ("test", 57)]  # in the order asked for
    raw = json.loads(builds.api.get(f"{builds.base('cancer')}/versions/{done['version']}").data)
    assert list(raw["version"]["splits"]) == ["train", "val", "test"]
    assert list(version["origin"]["split"]["fractions"]) == ["train", "val", "test"]
    # stratified: each split keeps the label ratio (357:212) within one row
    train = version["splits"]["train"]["labels"]
    assert abs(train["1"] - 455 * 357 / 569) <= 1
    assert version["origin"]["split"]["seed"] == 7 and version["manifest_sha256"] == builds.version("cancer", 1)[
        "manifest_sha256"]
    response = api.get(f"{builds.base('cancer')}/versions/{done['version']}/splits")
    assert list(json.loads(response.data)["splits"]) == ["train", "val", "test"]
    splits = response.get_json()["splits"]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == list(range(569))
    again = builds.start("cancer", 1, "split", body)
    assert api.get(f"{builds.base('cancer')}/versions/{again['version']}/splits").get_json()["splits"] == splits
    assert_error(api.get(f"{builds.base('cancer')}/versions/1/splits"), 404, "not_found", mentions="no split")
    assert_error(api.post(f"{builds.base('cancer')}/versions/1/split", {"fractions": {"train": 0.5, "test": 0.2}}),
                 400, "invalid", mentions="sum to 1")
    assert_error(api.post(f"{builds.base('cancer')}/versions/1/split", {"seed": -1}), 400, "invalid", mentions="seed")

    assert builds.upload("digits", _digit_files(100))["status"] == "done"
    done = builds.start("digits", 1, "split", {"fractions": {"train": 0.5, "test": 0.5}})
    images = api.get(f"{builds.base('digits')}/versions/{done['version']}/splits").get_json()["splits"]
    assert len(images["train"]) + len(images["test"]) == 100 and abs(len(images["train"]) - 50) <= 5  # per class
    assert not set(images["train"]) & set(images["test"]) and all(p.endswith(".png") for p in images["test"])


def test_tags_move_on_purpose_and_latest_moves_itself(builds, api):
    base = builds.base("wine")
    wine = load_wine(as_frame=True).frame.to_csv(index=False).encode()
    builds.upload("wine", {"wine.csv": wine})
    response = api.put(f"{base}/tags/golden", {"version": 1})
    assert response.status_code == 200 and response.get_json() == {"tag": "golden", "version": 1}
    builds.upload("wine", {"wine.csv": wine + b"13.0,1.0,2.0,15.0,100,2.0,2.0,0.3,1.5,5.0,1.0,3.0,1000,0\n"})
    tags = api.get(base).get_json()["tags"]
    assert tags == {"golden": 1, "latest": 2}  # golden stayed, latest moved
    assert builds.version("wine", "golden")["number"] == 1
    assert api.put(f"{base}/tags/golden", {"version": "latest"}).get_json()["version"] == 2
    assert_error(api.put(f"{base}/tags/latest", {"version": 1}), 400, "invalid", mentions="moves by itself")
    assert_error(api.put(f"{base}/tags/Bad Tag", {"version": 1}), 400, "invalid", mentions="lowercase")
    assert_error(api.put(f"{base}/tags/silver", {"version": 9}), 404, "not_found")
    assert api.delete(f"{base}/tags/golden").status_code == 204
    assert_error(api.delete(f"{base}/tags/golden"), 404, "not_found")
    assert_error(api.delete(f"{base}/tags/latest"), 400, "invalid")


def test_lineage_records_and_queries(builds, api, team):
    base = builds.base("cancer")
    builds.upload("cancer", {"breast_cancer.csv": _cancer_csv()})
    split = builds.start("cancer", 1, "split", {"seed": 1})
    response = api.post(f"{base}/versions/{split['version']}/lineage",
                        {"consumer_kind": "run", "consumer_id": "run-42", "role": "train"})
    assert response.status_code == 201
    api.post(f"{base}/versions/{split['version']}/lineage",
             {"consumer_kind": "run", "consumer_id": "run-42", "role": "train"})  # a repeat is a no-op
    lineage = api.get(f"{base}/versions/{split['version']}/lineage").get_json()
    assert [u["consumer_id"] for u in lineage["used_by"]] == ["run-42"]
    assert lineage["derived_from"] == {"dataset": "cancer", "version": 1}
    assert api.get(f"{base}/versions/1/lineage").get_json()["derived"] == [{"dataset": "cancer",
                                                                            "version": split["version"]}]
    used = api.get(f"/teams/{team}/lineage?consumer_kind=run&consumer_id=run-42").get_json()["used"]
    assert [(u["dataset"], u["version"], u["role"]) for u in used] == [("cancer", split["version"], "train")]
    assert_error(api.post(f"{base}/versions/1/lineage", {"consumer_kind": "notebook", "consumer_id": "x"}),
                 400, "invalid", mentions="consumer_kind")
    assert_error(api.post(f"{base}/versions/1/lineage", {"consumer_kind": "run"}), 400, "invalid",
                 mentions="consumer_id")


def test_gc_deletes_only_unreferenced_blobs_and_abandoned_parts(builds, live_stack):
    from officina.platform.datasets.gc import collect_garbage
    from officina.platform.storage.content import blob_key
    from officina.platform.tasks import DATASET_GC

    svc = live_stack.services
    kept = {"keep.txt": b"referenced by a version " + os.urandom(8)}
    assert builds.upload("kept", kept, kind="files")["status"] == "done"
    orphan = b"sent to an upload that was aborted " + os.urandom(8)
    build = builds.open("orphan", kind="files")
    builds.declare(build["id"], {"o.txt": orphan})
    builds.put(build["id"], "o.txt", orphan)
    part_size = build["part_size"]
    builds.declare(build["id"], {"big.bin": b"\0" * (part_size + 1)})
    builds.put(build["id"], "big.bin", b"\0" * part_size, part=1, parts=2)
    assert list(svc.store.list(f"uploads/{build['id']}/"))

    # a young orphan and the parts of a fresh upload survive; so does everything referenced
    report = collect_garbage(svc.pool, svc.store)
    assert svc.store.exists(blob_key(_sha(orphan)))
    assert api_abort(builds, build["id"]) == 204
    report = collect_garbage(svc.pool, svc.store, grace=timedelta(0))
    assert not report.skipped and report.blobs_deleted >= 1
    assert not svc.store.exists(blob_key(_sha(orphan)))
    assert svc.store.exists(blob_key(_sha(kept["keep.txt"])))
    assert builds.api.get(f"{builds.base('kept')}/versions/1/files/keep.txt").data == kept["keep.txt"]
    assert not list(svc.store.list(f"uploads/{build['id']}/"))  # abort dropped the staged part

    # an upload abandoned for longer than stale_after loses its parts
    stale = builds.open("stale", kind="files")
    builds.declare(stale["id"], {"big.bin": b"\1" * (part_size + 1)})
    builds.put(stale["id"], "big.bin", b"\1" * part_size, part=1, parts=2)
    report = collect_garbage(svc.pool, svc.store, stale_after=timedelta(0))
    assert report.parts_deleted >= 1 and not list(svc.store.list(f"uploads/{stale['id']}/"))
    assert builds.api.get(f"/builds/{stale['id']}").get_json()["build"]["status"] == "aborted"

    # the periodic task runs on the real worker
    result = svc.celery.send_task(DATASET_GC, queue="io").get(timeout=60)
    assert set(result) >= {"blobs_deleted", "kept", "skipped"}


def api_abort(builds, build_id: str) -> int:
    return builds.api.delete(f"/builds/{build_id}").status_code


def test_kind_conflict_and_diff_bad_input(builds, api):
    builds.upload("cancer", {"c.csv": _cancer_csv()})
    assert_error(api.post(f"{builds.base('cancer')}/uploads", {"kind": "images"}), 409, "conflict")
    failed = builds.upload("cancer", _digit_files(20))
    assert failed["status"] == "failed" and "tabular" in failed["error"]["message"], failed
    assert_error(api.get(f"{builds.base('cancer')}/diff?from=1"), 400, "invalid", mentions="both versions")
    assert_error(api.get(f"{builds.base('cancer')}/diff?from=1&to=7"), 404, "not_found")
    frame = pd.read_csv(io.BytesIO(_cancer_csv()))
    assert len(frame) == 569


def _tar(files: dict[str, bytes]) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_small_files_in_one_batch_request(builds, api):
    files = _digit_files(40)
    build = builds.open("batched")
    assert len(builds.declare(build["id"], files)) == 40
    lying = dict(files)
    first = next(iter(lying))
    lying[first] = b"not the declared bytes"
    assert_error(api.call("POST", f"/builds/{build['id']}/batch", data=_tar(lying), content_type="application/x-tar"),
                 400, "invalid", mentions=first)
    assert_error(api.call("POST", f"/builds/{build['id']}/batch", data=_tar({"undeclared.png": b"x"}),
                          content_type="application/x-tar"), 400, "invalid", mentions="not declared")
    assert builds.api.get(f"/builds/{build['id']}").get_json()["build"]["files_received"] == 0  # nothing recorded
    response = api.call("POST", f"/builds/{build['id']}/batch", data=_tar(files), content_type="application/x-tar")
    assert response.status_code == 200 and len(response.get_json()["received"]) == 40
    assert builds.commit(build["id"]).status_code == 202
    done = builds.wait(build["id"])
    assert done["status"] == "done" and builds.version("batched", 1)["file_count"] == 40
