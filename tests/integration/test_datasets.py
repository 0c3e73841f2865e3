"""Datasets on the real stack: upload versions through the API and SDK, read them back, bad input."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

from checks import assert_error


def _csv(loader) -> bytes:
    frame = loader(as_frame=True).frame.rename(columns={"target": "label"})
    return frame.to_csv(index=False).encode()


def _digits_zip(count: int = 200) -> bytes:
    digits = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(count):
            png = io.BytesIO()
            Image.fromarray((digits.images[i] * 15).astype(np.uint8)).resize((32, 32)).save(png, "PNG")
            archive.writestr(f"digits/{digits.target[i]}/{i:04d}.png", png.getvalue())
    return buf.getvalue()


def _upload(api, team: str, name: str, data: bytes, filename: str, token="default", **form):
    form = {**form, "file": (io.BytesIO(data), filename)}
    return api.post(f"/teams/{team}/datasets/{name}/versions", data=form, json=None, token=token,
                    content_type="multipart/form-data")


@pytest.fixture
def team(live_stack):
    return live_stack.make_team()


def test_upload_csv_versions_stats_and_dedup(api, team, live_stack):
    data = _csv(load_breast_cancer)
    first = _upload(api, team, "cancer", data, "breast_cancer.csv", message="initial import")
    assert first.status_code == 201, first.get_data(as_text=True)
    version = first.get_json()["version"]
    assert version["number"] == 1 and version["tags"] == ["latest"]
    assert version["row_count"] == 569 and version["label_column"] == "label"
    assert version["stats"]["label_distribution"] == {"1": 357, "0": 212}
    assert len(version["schema"]) == 31 and len(version["preview"]["rows"]) == 20
    assert version["preview"]["columns"][0] == "mean radius" and version["preview"]["columns"][-1] == "label"
    blobs_before = sum(1 for _ in live_stack.services.store.list("blobs/"))
    second = _upload(api, team, "cancer", data, "breast_cancer.csv")
    assert second.get_json()["version"]["number"] == 2
    assert sum(1 for _ in live_stack.services.store.list("blobs/")) == blobs_before  # same bytes, stored once
    dataset = api.get(f"/teams/{team}/datasets/cancer").get_json()
    assert [v["number"] for v in dataset["versions"]] == [2, 1]
    assert dataset["dataset"]["kind"] == "tabular" and dataset["dataset"]["latest"] == 2
    one = api.get(f"/teams/{team}/datasets/cancer/versions/1").get_json()["version"]
    assert one["tags"] == [] and one["message"] == "initial import"
    assert one["files"][0]["path"] == "breast_cancer.csv"
    raw = api.get(f"/teams/{team}/datasets/cancer/versions/latest/files/breast_cancer.csv")
    assert raw.status_code == 200 and raw.data == data


def test_upload_image_folders_gives_labels_and_thumbnails(api, team):
    response = _upload(api, team, "digits", _digits_zip(), "digits.zip")
    assert response.status_code == 201, response.get_data(as_text=True)
    version = response.get_json()["version"]
    assert version["file_count"] == 200 and version["format"] == "zip"
    assert sum(version["stats"]["label_distribution"].values()) == 200
    assert len(version["preview"]["thumbnails"]) == 32
    files = api.get(f"/teams/{team}/datasets/digits/versions/1").get_json()["version"]["files"]
    assert {f["label"] for f in files} == {str(d) for d in range(10)}


def test_sdk_upload_get_download_to_pandas(sdk_client, live_stack, tmp_path):
    sdk = sdk_client
    team = live_stack.make_team()
    path = tmp_path / "wine.csv"
    path.write_bytes(_csv(load_wine))
    version = sdk.datasets.upload("wine", path, team=team)
    assert version.number == 1 and version.label_column == "label"
    frame = sdk.datasets.get("wine", team=team).to_pandas()
    assert frame.shape == (178, 14) and sorted(frame["label"].unique()) == [0, 1, 2]
    target = version.download(tmp_path / "out")
    assert (target / "wine.csv").read_bytes() == path.read_bytes()
    assert [d["name"] for d in sdk.datasets.list(team=team)] == ["wine"]
    with pytest.raises(sdk.NotFound, match="no version '7'"):
        sdk.datasets.get("wine", 7, team=team)


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buf.getvalue()


def test_bad_uploads_get_clear_errors_and_leave_nothing(api, team, live_stack):
    cases = [
        (_zip({"../evil.png": b"x"}), "a.zip", {}, 400, ".."),
        (b"", "empty.csv", {}, 400, "empty"),
        (b"a,b\n1,2\n3,4,5\n", "ragged.csv", {}, 400, "line"),
        ("a,b\n\u00e9,1\n".encode("latin-1"), "latin.csv", {}, 400, "UTF-8"),
        (_csv(load_wine), "wine.csv", {"label_column": "species"}, 400, "species"),
    ]
    for data, filename, form, status, mention in cases:
        response = _upload(api, team, "broken", data, filename, **form)
        error = assert_error(response, status, "invalid")
        assert mention.lower() in error["message"].lower(), (filename, error)
    assert api.get(f"/teams/{team}/datasets").get_json()["datasets"] == []
    assert_error(_upload(api, team, "a..b/../x", _csv(load_wine), "w.csv"), 404, "not_found")
    assert_error(_upload(api, team, "Bad Name", _csv(load_wine), "w.csv"), 400, "invalid", mentions="Bad Name")
    no_file = api.post(f"/teams/{team}/datasets/x/versions", data={"message": "hi"}, json=None,
                       content_type="multipart/form-data")
    assert_error(no_file, 400, "invalid", mentions="'file'")
    unknown = _upload(api, team, "x", _csv(load_wine), "w.csv", colour="red")
    assert_error(unknown, 400, "invalid", mentions="colour")


def test_other_teams_and_viewers(api, team, live_stack):
    assert _upload(api, team, "wine", _csv(load_wine), "wine.csv").status_code == 201
    _, _, outsider = live_stack.make_user(live_stack.make_team(), "admin")
    assert_error(api.get(f"/teams/{team}/datasets/wine", token=outsider), 404, "not_found")
    assert_error(_upload(api, team, "wine", _csv(load_wine), "wine.csv", token=outsider), 404, "not_found")
    _, _, viewer = live_stack.make_user(team, "viewer")
    assert api.get(f"/teams/{team}/datasets/wine", token=viewer).status_code == 200
    assert_error(_upload(api, team, "wine", _csv(load_wine), "wine.csv", token=viewer), 403, "forbidden")
    images_into_tabular = _upload(api, team, "wine", _digits_zip(20), "d.zip")
    assert_error(images_into_tabular, 409, "conflict", mentions="tabular")
