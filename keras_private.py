"""Guards for the few places that reach into Keras' private API (callbacks.BackupAndRestore,
distribute.patch_keras_for_multi_worker). They are written against the Keras pinned in
requirements.txt; after an upgrade that moved what they rely on, training stops here with
a message, instead of resuming at the wrong place or training wrongly."""

from __future__ import annotations

import inspect

PINNED = "keras==3.15.*"  # as in requirements.txt


class KerasVersionError(RuntimeError):
    """The installed Keras lacks a private attribute this project relies on."""


def require(owner, names, what: str) -> None:
    """Raise KerasVersionError unless ``owner`` (a class, module or instance) has each of
    ``names``; a name may be ``"function(arg, ...)"`` to check a callable's parameters too."""
    import keras

    for name in names:
        attribute, _, params = name.partition("(")
        found = getattr(owner, attribute, None)
        missing = found is None
        if not missing and params:
            wanted = [p.strip() for p in params.rstrip(")").split(",") if p.strip()]
            missing = not set(wanted) <= set(inspect.signature(found).parameters)
        if missing:
            owner_name = getattr(owner, "__qualname__", getattr(owner, "__name__", type(owner).__name__))
            raise KerasVersionError(
                f"Keras {keras.__version__}: {owner_name}.{name} is missing or changed; {what} "
                f"relies on it. Install the Keras this project pins ({PINNED}, "
                "pip install -r requirements.txt) or update that code for the new Keras.")
