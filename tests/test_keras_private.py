"""The code that reaches into Keras' private API refuses to run, with a clear message, on a
Keras that no longer has what it relies on (an upgrade past the pinned version)."""

from __future__ import annotations

import re

import keras
import pytest

import callbacks
import distribute
import keras_private
from conftest import REPO_DIR


def test_requirements_pin_the_keras_the_private_api_is_written_for():
    pins = [line.strip() for line in (REPO_DIR / "requirements.txt").read_text().splitlines()
            if line.startswith("keras")]
    assert pins == [keras_private.PINNED]
    assert re.fullmatch(keras_private.PINNED.split("==")[1].replace(".", r"\.").replace("*", r".*"),
                        keras.__version__)


def test_backup_and_restore_refuses_a_keras_without_its_private_methods(tmp_path, monkeypatch):
    callbacks.BackupAndRestore(str(tmp_path), save_freq=5)  # the pinned Keras: fine
    monkeypatch.delattr(keras.callbacks.BackupAndRestore, "_save_model")
    with pytest.raises(keras_private.KerasVersionError,
                       match=r"BackupAndRestore\._save_model\(\) is missing or changed; "
                             r"callbacks\.BackupAndRestore relies on it\. Install the Keras this "
                             r"project pins \(keras==3\.15\.\*"):
        callbacks.BackupAndRestore(str(tmp_path), save_freq=5)


def test_backup_and_restore_refuses_a_keras_that_renamed_its_counters(tmp_path, monkeypatch):
    original_init = keras.callbacks.BackupAndRestore.__init__

    def renamed_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._batches_since_save = self.__dict__.pop("_batches_seen_since_last_saving")

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "__init__", renamed_init)
    with pytest.raises(keras_private.KerasVersionError, match="_batches_seen_since_last_saving"):
        callbacks.BackupAndRestore(str(tmp_path), save_freq=5)


def test_the_multi_worker_patch_refuses_a_changed_trainer(monkeypatch):
    from keras.src.backend.tensorflow import trainer as tf_trainer

    monkeypatch.delattr(tf_trainer, "_landmarks_multi_worker_patch", raising=False)

    def changed(self, data_batch=None):  # a Keras that no longer passes the iterator
        return None

    monkeypatch.setattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", changed)
    with pytest.raises(keras_private.KerasVersionError,
                       match=r"_maybe_symbolic_build\(self, iterator, data_batch\) is missing or changed"):
        distribute.patch_keras_for_multi_worker()
    assert tf_trainer.TensorFlowTrainer._maybe_symbolic_build is changed  # nothing patched
