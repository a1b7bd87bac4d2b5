"""Checkpoints: one ``.npz`` file per training run, written atomically, read without pickle.

What a checkpoint holds (every entry is a plain array; nothing in it can run code):

- ``model/<name>``: every entry of ``model.state_dict()`` (weights, biases, BatchNorm running
  statistics), float32 as trained.
- ``optim/<name>``: every entry of the optimizer's state (momentum buffers, Adam moments),
  from ``optimizer.state_dict()``.
- ``meta``: a 0-d unicode array holding a JSON string: the iteration, the training config
  (a dict), the NumPy generator state (its 128-bit integers survive JSON as Python ints),
  and anything else the caller passes in ``extra`` (loss history, best mAP, class names).

Why ``.npz`` and not pickle: ``np.load(path, allow_pickle=False)`` can only ever produce
arrays, so opening a checkpoint downloaded from someone else is safe. Why atomic: a run
killed while writing (Ctrl-C, out of memory, power) must leave the previous checkpoint
intact, so we write a temporary file in the same folder and ``os.replace`` it over the old
one; on POSIX and Windows the rename is atomic within one file system.
"""

import json
import os
import tempfile
from dataclasses import asdict, is_dataclass

import numpy as np

from .errors import CheckpointError

FORMAT_VERSION = 1


def _state_of(obj):
    """``obj.state_dict()`` as a dict of arrays, or {} for ``None``."""
    if obj is None:
        return {}
    return {name: np.asarray(value) for name, value in obj.state_dict().items()}


def rng_state(rng):
    """The state of a ``np.random.Generator`` as a JSON-able dict (its bit generator's state)."""
    return rng.bit_generator.state


def set_rng_state(rng, state):
    """Restore a ``np.random.Generator`` in place from ``rng_state``'s dict."""
    rng.bit_generator.state = state


def savez_atomic(path, arrays):
    """Write ``arrays`` (name -> ndarray) to the ``.npz`` file ``path`` atomically.

    Written next to the target (same file system, so the rename is atomic), flushed to disk,
    then swapped in with ``os.replace``: until then the old file is untouched, so a crash or a
    Ctrl-C never leaves a half-written checkpoint. Used by ``save_checkpoint`` and
    ``minissd.nn.Module.save``.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner alone (0600); give it the
        # permissions any other file written here would get (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path, model, optimizer=None, iteration=0, config=None, rng=None, extra=None):
    """Write a checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    - path: str or PathLike, the ``.npz`` file to (over)write; its folder is created.
    - model: a ``minissd.nn.Module``; its ``state_dict()`` is stored under ``model/``.
    - optimizer: an optimizer with ``state_dict()`` (SGD momentum, Adam moments), or None.
    - iteration: int, the number of finished training iterations.
    - config: a dataclass or dict (the TrainConfig), stored as JSON.
    - rng: a ``np.random.Generator`` whose state is stored, so a resumed run continues the
      same random stream, or None.
    - extra: a JSON-able dict stored alongside (history, best mAP, class names...).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if is_dataclass(config):
        config = asdict(config)
    meta = {
        "format_version": FORMAT_VERSION,
        "iteration": int(iteration),
        "config": config,
        "rng_state": None if rng is None else rng_state(rng),
        "extra": extra or {},
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({f"model/{k}": v for k, v in _state_of(model).items()})
    arrays.update({f"optim/{k}": v for k, v in _state_of(optimizer).items()})

    savez_atomic(path, arrays)
    return path


def read_checkpoint(path):
    """Read a checkpoint into plain Python: (model_state, optim_state, meta).

    - model_state: dict name -> np.ndarray (``model/`` entries, prefix removed).
    - optim_state: dict name -> np.ndarray (``optim/`` entries, prefix removed).
    - meta: dict with "iteration", "config", "rng_state", "extra", "format_version".

    Raises CheckpointError naming the file when it is missing, not an npz, or has no meta.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {name: data[name] for name in data.files}
    except Exception as err:  # zipfile.BadZipFile, OSError, ValueError (pickled object)...
        raise CheckpointError(f"{path}: not a readable minissd checkpoint ({err})") from err
    if "meta" not in entries:
        raise CheckpointError(f"{path}: no 'meta' entry; not a minissd checkpoint")
    meta = json.loads(str(entries.pop("meta")))
    model_state = {k[len("model/"):]: v for k, v in entries.items() if k.startswith("model/")}
    optim_state = {k[len("optim/"):]: v for k, v in entries.items() if k.startswith("optim/")}
    return model_state, optim_state, meta


def load_checkpoint(path, model, optimizer=None, rng=None):
    """Load a checkpoint into ``model`` (and ``optimizer``, ``rng``) in place; return meta.

    - model: the Module to fill; a missing or mis-shaped entry raises (from
      ``load_state_dict``), with the file name added.
    - optimizer: filled from the ``optim/`` entries when given and present.
    - rng: a ``np.random.Generator`` set to the saved state when given and saved.
    - returns: the meta dict ("iteration", "config", "extra", ...).
    """
    model_state, optim_state, meta = read_checkpoint(path)
    try:
        model.load_state_dict(model_state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{os.fspath(path)}: does not fit this model: {err}") from err
    if optimizer is not None and optim_state:
        optimizer.load_state_dict(optim_state)
    if rng is not None and meta.get("rng_state") is not None:
        set_rng_state(rng, meta["rng_state"])
    return meta
