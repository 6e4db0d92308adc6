"""Which devices train.py runs on, who writes the files, how the data is split.

- ``default``: one device (the first GPU, else the CPU), as without tf.distribute.
- ``mirrored``: ``MirroredStrategy`` over every GPU of this machine (every logical CPU
  device when it has none: that is how the tests run it), one replica per device.
- ``multiworker``: ``MultiWorkerMirroredStrategy`` over the machines listed in the
  ``TF_CONFIG`` environment variable, each with all its GPUs.

``--batch-size`` is per replica: one step trains on ``batch_size * num_replicas_in_sync``
images, and an epoch (``--steps-per-epoch 0``) is one pass over the training set at that
global batch. The learning rate is used as given; scale ``--lr`` yourself if you want the
linear scaling rule.

Only the chief writes files. The other workers keep no backup of their own: when training
(re)starts, the chief restores its backup and every worker copies the chief's weights,
optimizer state and epoch, so a restarted cluster resumes in step whether or not the
workers share a disk.
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("default", "mirrored", "multiworker")


class StrategyError(ValueError):
    """The devices or the cluster cannot be set up as asked; the message says why."""


def make_strategy(name: str):
    """A tf.distribute strategy. Call it before anything else touches TensorFlow: the
    multi-worker runtime must be set up before TensorFlow starts."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        patch_keras_for_multi_worker()
        return strategy
    raise StrategyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def check_tf_config(text: str | None) -> dict:
    """TF_CONFIG parsed, or StrategyError saying what is wrong with it."""
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text:
        raise StrategyError(f"--strategy multiworker needs TF_CONFIG, e.g. {example}")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as err:
        raise StrategyError(f"TF_CONFIG is not JSON ({err}): {text!r}") from None
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise StrategyError(f"TF_CONFIG needs a 'cluster' and a 'task' object, e.g. {example}")
    tasks = cluster.get(task.get("type"))
    if not isinstance(tasks, list) or not 0 <= task.get("index", -1) < len(tasks):
        raise StrategyError(f"TF_CONFIG: task {task} is not in the cluster {cluster}")
    return tf_config


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints, logs and plots (always, on one machine)."""
    return strategy.extended.should_checkpoint


def describe(strategy) -> str:
    if not is_multi_worker(strategy):
        if strategy.num_replicas_in_sync == 1:
            return "one device"
        return f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} replicas"
    resolver = strategy.cluster_resolver
    return (f"MultiWorkerMirroredStrategy, {strategy.num_replicas_in_sync} replicas, this is "
            f"{resolver.task_type} {resolver.task_id}{' (chief)' if is_chief(strategy) else ''}")


def distribute_dataset(strategy, make_dataset):
    """``make_dataset(num_shards, shard_index)`` -> per-replica batches of this worker's
    shard; one input pipeline per worker, feeding its replicas in turn.

    Sharding is ours (the pipeline reads Python-side crops through ``numpy_function``, so
    tf.data cannot shard it by file) and happens on the index stream, before any decoding.
    """
    if strategy.num_replicas_in_sync == 1 and not is_multi_worker(strategy):
        return make_dataset(1, 0)
    return strategy.distribute_datasets_from_function(
        lambda context: make_dataset(context.num_input_pipelines, context.input_pipeline_id))


def split_each_batch(dataset):
    """A dataset of global batches, each split over all replicas by Keras/tf.data (DATA
    sharding: every worker runs the whole pipeline and keeps its part of each batch).
    Used for the validation set, small enough for that, so each face counts once."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def chief_value(strategy, value: int) -> int:
    """The chief's ``value`` on every worker (``value`` itself on one machine)."""
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return value
    mine, zero = tf.constant([value], tf.int64), tf.constant([0], tf.int64)
    return int(_reduce_over_replicas(strategy, "SUM",
                                     lambda replica: mine if replica == 0 else zero)[0])


def copy_chief_state(strategy, variables) -> None:
    """Overwrite ``variables`` (model weights, optimizer state) with the chief's values on
    every worker: a sum over the replicas in which only replica 0, the chief's first, adds
    its values and the others add zeros, which leaves them exact."""
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return
    for group in _by_dtype(variables):
        mine = _flatten(group)
        zeros = tf.zeros_like(mine)
        _assign_flat(group, _reduce_over_replicas(
            strategy, "SUM", lambda replica: mine if replica == 0 else zeros))


def average_over_replicas(strategy, variables) -> None:
    """Set each of ``variables`` to its mean over all replicas, on every replica.

    Keras 3 keeps BatchNormalization's moving statistics per replica (each updates its
    copy from its own share of the batch); their mean is what one device would have
    gathered from the mean of the replicas' batch statistics.
    """
    if strategy.num_replicas_in_sync == 1:
        return
    for group in _by_dtype(variables):
        # This worker's copies of each variable, in the order of its replicas, which are
        # numbered consecutively.
        copies = list(zip(*(strategy.experimental_local_results(v.value) for v in group)))
        _assign_flat(group, _reduce_over_replicas(
            strategy, "MEAN", lambda replica: _flatten(copies[replica % len(copies)])))


def _reduce_over_replicas(strategy, reduce_op: str, value_of_replica):
    """``value_of_replica(replica_id_in_sync_group)`` summed or averaged over all replicas,
    in one all-reduce."""
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: value_of_replica(context.replica_id_in_sync_group))
    return strategy.reduce(reduce_op, per_replica, axis=None)


def _by_dtype(variables) -> list[list]:
    groups = {}
    for variable in variables:
        groups.setdefault(str(variable.dtype), []).append(variable)
    return list(groups.values())


def _flatten(tensors):
    import tensorflow as tf

    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def _assign_flat(variables, flat) -> None:
    import tensorflow as tf

    offset = 0
    for v in variables:
        size = int(tf.size(v))
        v.assign(tf.reshape(flat[offset:offset + size], v.shape))
        offset += size


def patch_keras_for_multi_worker() -> None:
    """Two fixes without which Keras 3 (up to 3.15 at least) cannot ``fit`` under
    MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow/tensorflow#72388):

    - before training, Keras reads one batch to build the model and "reduces" the
      (images, landmarks) pair with ``strategy.reduce``, which takes one tensor, not a
      pair: the first replica's batch, whose shapes are all it needs, is used instead;
    - after each step it averages the scalar loss and metrics over the workers along
      axis 0, which a scalar does not have: they are averaged over the replicas instead
      (only the per-step logs; the epoch's figures come from the metrics' variables).
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    import keras_private

    trainer_class = tf_trainer.TensorFlowTrainer
    if not getattr(tf_trainer, "_landmarks_multi_worker_patch", False):
        keras_private.require(trainer_class, ["_maybe_symbolic_build(self, iterator, data_batch)"],
                              "distribute.patch_keras_for_multi_worker")
        keras_private.require(tf_trainer, ["reduce_per_replica(values, strategy, reduction)"],
                              "distribute.patch_keras_for_multi_worker")
        keras_private.require(tree, ["map_structure"], "distribute.patch_keras_for_multi_worker")
    if getattr(tf_trainer, "_landmarks_multi_worker_patch", False):
        return
    original_build, original_reduce = trainer_class._maybe_symbolic_build, tf_trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0],
                    next(batches))
                break
        return original_build(self, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction == "auto" and is_multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    trainer_class._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer._landmarks_multi_worker_patch = True
