"""Keras callbacks that train.py adds to ``model.fit``: atomic best/final checkpoints and a
PNG of the learning curves. Everything else (resume, CSV, TensorBoard) is Keras' own."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
from pathlib import Path

import keras

import keras_private

BEST_WEIGHTS = "best_model.weights.h5"
BEST_FULL = "best_model_full.h5"
FINAL_FULL = "final_model.h5"


def atomic_save(path: Path, save) -> None:
    """Write through a temporary file in the same folder, then rename: a run killed while
    saving leaves the previous file intact, never a half-written one."""
    path = Path(path)
    # Keras wants the real suffix (.weights.h5 / .h5) on the file it writes.
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        save(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


PENDING_JOURNAL = "pending_saves.json"


def save_together(directory, saves: dict) -> None:
    """Write several files of ``directory`` as one: ``saves`` maps each file name to a
    function writing it to a given path. Each is written to ``.pending-<name>``; then a
    journal listing them is written atomically (the commit point); then all are renamed
    into place and the journal removed. Killed before the journal, the old files stand;
    after it, ``recover_directory`` completes the renames, so the files always agree."""
    commit_pending(directory, write_pending(directory, saves))


def pending_path(directory, name: str) -> Path:
    """Where ``save_together`` writes ``name`` before it is committed."""
    return Path(directory) / f".pending-{name}"


def write_pending(directory, saves: dict) -> list[str]:
    """First half of ``save_together``: each file written beside its final place; nothing
    replaced yet. Returns the names, for ``commit_pending`` or ``discard_pending``."""
    written = []
    try:
        for name, save in saves.items():
            written.append(name)
            save(str(pending_path(directory, name)))
    except BaseException:  # a full disk, say: no half-written pending file stays behind
        discard_pending(directory, written)
        raise
    return list(saves)


def commit_pending(directory, names) -> None:
    """Second half of ``save_together``: the journal (the commit point), then the renames.
    FileNotFoundError, and nothing replaced, when a pending file is gone (removed by another
    process): a run never reports a file it did not write."""
    journal = {name: pending_path(directory, name).name for name in names}
    missing = [name for name, temporary in journal.items() if not (Path(directory) / temporary).is_file()]
    if missing:
        discard_pending(directory, names)
        raise FileNotFoundError(f"{Path(directory)}: the files written for {', '.join(missing)} are gone "
                                "(removed by another process); nothing was replaced")
    atomic_save(Path(directory) / PENDING_JOURNAL, lambda p: Path(p).write_text(json.dumps(journal)))
    recover_directory(directory)


def discard_pending(directory, names) -> None:
    for name in names:
        pending_path(directory, name).unlink(missing_ok=True)


def recover_directory(directory) -> list[str]:
    """Finish a ``save_together`` interrupted after its commit point, and remove what
    killed runs left behind: uncommitted ``.pending-*`` files and the ``.tmp-<pid>-*``
    files of ``atomic_save`` whose process is gone. Returns the names it completed or
    removed."""
    directory = Path(directory)
    done = []
    journal = directory / PENDING_JOURNAL
    if journal.exists():
        for name, temporary in json.loads(journal.read_text()).items():
            if (directory / temporary).exists():
                os.replace(directory / temporary, directory / name)
                done.append(name)
        journal.unlink()
    for stale in directory.glob(".pending-*"):
        stale.unlink()
        done.append(stale.name)
    for stale in directory.glob(".tmp-*-*"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            stale.unlink()
            done.append(stale.name)
    return done


class DirectoryBusy(Exception):
    """Another process holds the folder's lock (directory_lock)."""


@contextlib.contextmanager
def directory_lock(directory):
    """Hold an exclusive lock on ``directory`` itself (``flock`` on the folder, no lock file
    left behind) while the block runs, so that two runs never write, recover or clean up the
    same folder's pending files at once; DirectoryBusy at once if another process holds it.
    The lock goes with the process: a killed run leaves none."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryBusy(f"{Path(directory)}: another run is writing there") from None
        yield Path(directory)
    finally:
        os.close(fd)  # releases the lock


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class _DropLegacyHdf5Notice(logging.Filter):
    """The whole model is saved as HDF5 on purpose (export_tflite.py, evaluate.py and
    tflite conversion read .h5); Keras' notice that the format is legacy would otherwise be
    logged at every save."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "saving your model as an HDF5 file" not in record.getMessage()


def save_full_model(model: keras.Model, path: Path) -> None:
    keras_log = logging.getLogger("absl")  # Keras' saving_api logs through absl.logging
    notice_filter = _DropLegacyHdf5Notice()
    keras_log.addFilter(notice_filter)
    try:
        atomic_save(path, lambda p: model.save(p))
    finally:
        keras_log.removeFilter(notice_filter)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves ``best_model.weights.h5`` and ``best_model_full.h5`` whenever the monitored
    validation figure improves; the best value so far survives a resume. The two files and
    ``best_state.json`` are written together (``save_together``): a run killed while saving
    them leaves the previous three or, once the next run starts, the new three."""

    def __init__(self, directory, monitor: str = "val_nme", enabled: bool = True,
                 resume: bool = False):
        super().__init__()
        self.resume = resume
        self.directory = Path(directory)
        self.monitor = monitor
        self.enabled = enabled
        self.state_path = self.directory / "best_state.json"
        self.best = math.inf

    def on_train_begin(self, logs=None):
        if self.enabled:
            for name in recover_directory(self.directory):
                print(f"{self.directory}: completed or removed {name}, left by an interrupted run")
        if self.resume and self.state_path.exists():
            self.best = json.loads(self.state_path.read_text())["best"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"BestCheckpoint: '{self.monitor}' is not among the logs "
                           f"{sorted(logs or {})}; is there validation data?")
        if value < self.best:
            self.best = float(value)
            if self.enabled:
                state = {"best": self.best, "epoch": epoch + 1, "monitor": self.monitor}
                save_together(self.directory, {
                    BEST_WEIGHTS: lambda p: self.model.save_weights(p),
                    BEST_FULL: lambda p: save_full_model(self.model, p),
                    self.state_path.name: lambda p: Path(p).write_text(json.dumps(state))})
                print(f"epoch {epoch + 1}: {self.monitor} improved to {value:.5f}, saved {BEST_FULL}")


class TrainingDiverged(RuntimeError):
    """A validation figure became NaN or infinite: the run cannot improve any more."""


class StopOnNonFiniteValidation(keras.callbacks.Callback):
    """Ends ``fit`` with TrainingDiverged as soon as an epoch's validation loss or metric is
    NaN or infinite. Keras' TerminateOnNaN watches only the training loss and ends the run
    as a success; here the run fails, and the best checkpoint so far stays as it was."""

    def on_epoch_end(self, epoch, logs=None):
        broken = {key: value for key, value in (logs or {}).items()
                  if key.startswith("val_") and not math.isfinite(float(value))}
        if broken:
            figures = ", ".join(f"{key} = {float(value)}" for key, value in sorted(broken.items()))
            raise TrainingDiverged(f"epoch {epoch + 1}: {figures}: training diverged (try a lower "
                                   "--lr) or the validation data holds unusable values; the best "
                                   "checkpoint saved so far is kept")


class KeepReplicasInStep(keras.callbacks.Callback):
    """Keeps every replica's copy of the model identical where Keras does not (a no-op on
    one device):

    - at the start, every worker takes the chief's weights and optimizer state, which the
      chief's BackupAndRestore (earlier in the list) has just restored; only the chief
      keeps a backup, so workers resume in step even without a shared disk;
    - before each validation, BatchNormalization's moving statistics, which each replica
      updates from its own batches, are averaged over the replicas, so the model that is
      validated is the one that is saved, and every worker ends with the same weights.
    """

    def on_train_begin(self, logs=None):
        import distribute

        distribute.copy_chief_state(self.model.distribute_strategy,
                                    self.model.weights + self.model.optimizer.variables)

    def on_test_begin(self, logs=None):
        import distribute

        distribute.average_over_replicas(
            self.model.distribute_strategy,
            [w for w in self.model.non_trainable_weights if "float" in str(w.dtype)])


class LogLearningRate(keras.callbacks.Callback):
    """Adds ``learning_rate`` to each epoch's logs (so to history.csv): the rate the
    optimizer's schedule gives at the epoch's end."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class PlotHistory(keras.callbacks.Callback):
    """Redraws the learning curves from the history CSV after every epoch."""

    def __init__(self, csv_path, png_path, enabled: bool = True):
        super().__init__()
        self.csv_path, self.png_path, self.enabled = Path(csv_path), Path(png_path), enabled

    def on_epoch_end(self, epoch, logs=None):
        if self.enabled:
            plot_history(self.csv_path, self.png_path)


def plot_history(csv_path, png_path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax_loss, ax_nme) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax_loss), ("val_loss", ax_loss), ("nme", ax_nme), ("val_nme", ax_nme)):
        if key in rows[0]:
            ax.plot(epochs, [float(r[key]) * (100 if "nme" in key else 1) for r in rows],
                    marker="o", label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_nme.set(xlabel="epoch", ylabel="NME (%), outer eye corners", title="NME")
    for ax in (ax_loss, ax_nme):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_save(Path(png_path), lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, corrected for an integer ``save_freq`` (Keras 3.15):

    - Keras backs up only every ``save_freq`` batches, never at an epoch boundary, so a run
      stopped after an epoch had ended restarted that finished epoch (training it twice and
      writing its history.csv row twice): here a backup is also taken as each epoch begins,
      once every callback is done with the previous one;
    - after a restore Keras counts epochs from 0 again until the first epoch ends, so a
      backup taken early in the resumed epoch said "epoch 0" and a second interruption
      restarted the whole run: here the epoch number comes from ``fit`` itself.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What the corrections below (and the resume message in train.py) rely on.
        keras_private.require(keras.callbacks.BackupAndRestore, ["_save_model()", "_load_model()"],
                              "callbacks.BackupAndRestore")
        keras_private.require(self, ["_current_epoch", "_batches_seen_since_last_saving",
                                     "_last_batch_seen", "_training_metadata_path"],
                              "callbacks.BackupAndRestore")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._epoch_ended = False

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch
        if self._epoch_ended and self.save_freq != "epoch":
            self._save_model()
            self._batches_seen_since_last_saving = 0

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._epoch_ended = True
