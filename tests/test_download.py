"""The kagglehub download path of train.py: real code, exercised without the network by
replacing kagglehub's download call."""

from __future__ import annotations

import kagglehub
import pytest

import dataset
import train
from config import KAGGLE_DATASET


def test_no_network_or_no_credentials_gives_a_clear_error(monkeypatch, tmp_path):
    def refuse(handle):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", refuse)
    with pytest.raises(dataset.DataError) as caught:
        dataset.download_dataset(tmp_path / "ibug")
    message = str(caught.value)
    assert KAGGLE_DATASET in message and "ConnectionError" in message
    assert "kaggle.json" in message and "--data-dir" in message


def test_a_downloaded_archive_is_linked_where_data_dir_points(monkeypatch, tmp_path):
    cache = tmp_path / "kaggle-cache" / "versions" / "1" / "ibug_300W_large_face_landmark_dataset"
    cache.mkdir(parents=True)
    (cache / "labels_ibug_300W_train.xml").write_text("<dataset><images/></dataset>")
    asked = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: asked.append(handle) or str(cache.parents[1]))
    target = tmp_path / "data" / "ibug_300W_large_face_landmark_dataset"
    assert dataset.download_dataset(target) == target
    assert asked == [KAGGLE_DATASET]
    assert target.is_symlink() and dataset.has_dataset(target)


def test_an_archive_without_labels_is_refused(monkeypatch, tmp_path):
    (tmp_path / "other").mkdir()
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(tmp_path / "other"))
    with pytest.raises(dataset.DataError, match="holds no labels_ibug_300W_train.xml"):
        dataset.download_dataset(tmp_path / "ibug")


def test_train_without_data_and_without_download_stops_with_exit_2(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = train.main(["--data-dir", str(empty), "--no-download", "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 2
    assert f"{empty}: no dataset there" in caplog.text
