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
one; on POSIX and Windows the rename is atomic within one file system. A run killed during
the write leaves that temporary file behind; ``remove_stale_temporaries`` removes it at the
next start.

Why the headers are read first: a ``.npz`` is a zip of ``.npy`` files, and a 1 MB zip can
hold a 1 GiB array of zeros. ``read_npz`` reads every entry's header (shape, dtype) without
inflating anything, refuses an entry whose shape differs from what the caller expects or
whose size the file cannot account for, and only then reads the arrays.
"""

import json
import math
import os
import re
import tempfile
import zipfile
from dataclasses import asdict, is_dataclass

import numpy as np

from .errors import CheckpointError

FORMAT_VERSION = 1
TEMP_PREFIX = ".minissd-tmp-"  # write_atomic's temporary files: .minissd-tmp-<pid>-<random>.npz|.json
MAX_META_BYTES = 64 * 2**20  # the JSON meta entry (history and config), as a unicode array
# Entries whose shape nobody expects may together declare at most this much more than the
# file holds (np.savez stores arrays uncompressed: a genuine file declares about its own size).
MAX_INFLATION, INFLATION_ALLOWANCE = 64, 64 * 2**20


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


def write_atomic(path, write, suffix):
    """Write the file ``path`` atomically: ``write(f)`` fills a binary file object ``f``.

    Written next to the target (same file system, so the rename is atomic) under a temporary
    name carrying the writer's pid, flushed to disk, then swapped in with ``os.replace``: until
    then the old file is untouched, so a crash or a Ctrl-C never leaves half a file (and
    ``remove_stale_temporaries`` can tell a dead writer's leftovers). ``suffix`` (".npz",
    ".json") ends the temporary name.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
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


def savez_atomic(path, arrays):
    """Write ``arrays`` (name -> ndarray) to the ``.npz`` file ``path`` atomically
    (``write_atomic``). Used by ``save_checkpoint`` and ``minissd.nn.Module.save``."""
    write_atomic(path, lambda f: np.savez(f, **arrays), ".npz")


# write_atomic's temporary names: today's (.npz and .json) (with the writer's pid) and those of versions before
# 2026-12-02 (mkstemp's ".tmp-" + 8 characters + ".npz"); nothing else is ever removed.
_TEMP_NAME = re.compile(r"\.minissd-tmp-(\d+)-[a-z0-9_]{8}\.(?:npz|json)|\.tmp-[a-z0-9_]{8}\.npz")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, someone else's
    return True


def remove_stale_temporaries(folder):
    """Remove the temporary checkpoint files that a killed write left in ``folder``; return them.

    - folder: str or PathLike; a missing folder removes nothing.
    - returns: the list of removed paths (str), sorted.
    Only names that ``savez_atomic`` makes are touched, and not those of a process that is still
    running (it may be writing now). Train calls this at start, before its first checkpoint.
    """
    folder = os.fspath(folder)
    removed = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TEMP_NAME.fullmatch(name)
        path = os.path.join(folder, name)
        if m is None or not os.path.isfile(path) or os.path.islink(path):
            continue
        if m.group(1) is not None and int(m.group(1)) != os.getpid() and _alive(int(m.group(1))):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


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


def npz_headers(path):
    """Every entry's (shape, dtype) of the ``.npz`` file ``path``, read without inflating any.

    - returns: dict entry name (without ".npy") -> (shape tuple, np.dtype)
    Raises CheckpointError as ``_npz_headers`` does.
    """
    return {name: (shape, dtype) for name, (shape, dtype, _) in _npz_headers(path).items()}


def _npz_headers(path):
    """npz_headers's dict with each entry's ZipInfo added: name -> (shape, dtype, info).

    Raises CheckpointError naming the file and the entry when it is not a zip of ``.npy``
    files, an entry holds Python objects (they need pickle), or an entry declares more bytes
    than the zip says it holds.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    headers = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise CheckpointError(f"{path}: entry {info.filename!r} is not an array (.npy)")
                name = info.filename[:-len(".npy")]
                if name in headers:
                    raise CheckpointError(f"{path}: entry {name!r} appears twice")
                with zf.open(info) as f:  # inflates the first few hundred bytes only
                    version = np.lib.format.read_magic(f)
                    if version not in readers:
                        raise CheckpointError(f"{path}: entry {name!r} has .npy version {version}")
                    shape, _, dtype = readers[version](f)
                    header_bytes = f.tell()
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: entry {name!r} holds Python objects "
                                          "(they would need pickle); refused")
                nbytes = math.prod(shape) * dtype.itemsize
                if header_bytes + nbytes != info.file_size:
                    raise CheckpointError(
                        f"{path}: entry {name!r} declares {shape} {dtype} ({nbytes} bytes) but "
                        f"holds {info.file_size - header_bytes} bytes; damaged or forged")
                headers[name] = (tuple(shape), dtype, info)
    except CheckpointError:
        raise
    except Exception as err:  # zipfile.BadZipFile, OSError, ValueError (a bad header)...
        raise CheckpointError(f"{path}: not a readable minissd checkpoint ({err})") from err
    return headers


def read_npz(path, expected=None, names=None):
    """The arrays of the ``.npz`` file ``path``, each checked from its header before it is read.

    - expected: dict entry name -> shape, the entries whose shape the caller knows (a model's
      weights); an entry named there with another shape is refused before anything is read.
    - names: read only these entries (None: all); the headers of all are checked anyway.
    - returns: dict entry name -> np.ndarray
    The entries nobody expects may together declare at most MAX_INFLATION times the file's
    size plus INFLATION_ALLOWANCE bytes: np.savez stores arrays as they are, so a genuine
    file declares about its own size, and a 1 MB file declaring a 1 GiB entry is refused.
    Raises CheckpointError naming the file and the entry.
    """
    path = os.fspath(path)
    headers = _npz_headers(path)
    expected = expected or {}
    unexpected_bytes = 0
    for name, (shape, dtype, info) in headers.items():
        if name in expected:
            if tuple(expected[name]) != shape:
                raise CheckpointError(f"{path}: does not fit: entry {name!r} has shape {shape}, "
                                      f"expected {tuple(expected[name])} (nothing was read)")
        else:
            unexpected_bytes += math.prod(shape) * dtype.itemsize
    budget = MAX_INFLATION * os.path.getsize(path) + INFLATION_ALLOWANCE
    if unexpected_bytes > budget:
        raise CheckpointError(f"{path}: its entries declare {unexpected_bytes} bytes, far more "
                              f"than a {os.path.getsize(path)}-byte file holds (a zip bomb?); "
                              "refused before inflating them")
    if "meta" in headers:
        shape, dtype, _ = headers["meta"]
        if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_META_BYTES:
            raise CheckpointError(f"{path}: entry 'meta' is {shape} {dtype}, expected a JSON "
                                  f"string of at most {MAX_META_BYTES // 4} characters")
    wanted = list(headers) if names is None else [n for n in names if n in headers]
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in wanted}
    except Exception as err:  # a damaged deflate stream, a bad CRC...
        raise CheckpointError(f"{path}: not a readable minissd checkpoint ({err})") from err


def _parse_meta(path, entry):
    try:
        meta = json.loads(str(entry))
    except ValueError as err:
        raise CheckpointError(f"{path}: its 'meta' entry is not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its 'meta' entry is JSON {type(meta).__name__}, "
                              "expected an object")
    for key, kind in (("iteration", int), ("extra", dict)):
        if key in meta and not isinstance(meta[key], kind):
            raise CheckpointError(f"{path}: meta[{key!r}] is {meta[key]!r}, expected "
                                  f"{'an integer' if kind is int else 'an object'}")
    return meta


def read_meta(path):
    """The meta dict of a checkpoint alone (every header is checked, only 'meta' is read)."""
    path = os.fspath(path)
    entries = read_npz(path, names=["meta"])
    if "meta" not in entries:
        raise CheckpointError(f"{path}: no 'meta' entry; not a minissd checkpoint")
    return _parse_meta(path, entries["meta"])


def read_checkpoint(path, expected=None):
    """Read a checkpoint into plain Python: (model_state, optim_state, meta).

    - expected: optional dict entry name ("model/<name>", "optim/<name>") -> shape; see
      ``read_npz`` (``load_checkpoint`` passes its model's and optimizer's shapes).
    - model_state: dict name -> np.ndarray (``model/`` entries, prefix removed).
    - optim_state: dict name -> np.ndarray (``optim/`` entries, prefix removed).
    - meta: dict with "iteration", "config", "rng_state", "extra", "format_version".

    Raises CheckpointError naming the file when it is missing, not an npz, has an entry too
    large or of the wrong shape, or its meta is missing or not a JSON object.
    """
    path = os.fspath(path)
    entries = read_npz(path, expected)
    if "meta" not in entries:
        raise CheckpointError(f"{path}: no 'meta' entry; not a minissd checkpoint")
    meta = _parse_meta(path, entries.pop("meta"))
    model_state = {k[len("model/"):]: v for k, v in entries.items() if k.startswith("model/")}
    optim_state = {k[len("optim/"):]: v for k, v in entries.items() if k.startswith("optim/")}
    return model_state, optim_state, meta


def expected_shapes(model, optimizer=None):
    """{entry name: shape} of what a checkpoint of ``model`` (and ``optimizer``) holds.

    Optimizer entries are numbered by parameter ("momentum.3"): the shape of parameter 3.
    """
    shapes = {f"model/{k}": np.shape(v) for k, v in model.state_dict().items()}
    if optimizer is not None:
        params = getattr(optimizer, "params", [])
        for i, p in enumerate(params):
            for key in ("momentum", "m", "v"):  # SGD's and Adam's buffers
                shapes[f"optim/{key}.{i}"] = p.data.shape
    return shapes


def load_checkpoint(path, model, optimizer=None, rng=None):
    """Load a checkpoint into ``model`` (and ``optimizer``, ``rng``) in place; return meta.

    - model: the Module to fill; a missing or mis-shaped entry raises (from
      ``load_state_dict``), with the file name added.
    - optimizer: filled from the ``optim/`` entries when given and present.
    - rng: a ``np.random.Generator`` set to the saved state when given and saved.
    - returns: the meta dict ("iteration", "config", "extra", ...).
    """
    model_state, optim_state, meta = read_checkpoint(path, expected_shapes(model, optimizer))
    try:
        model.load_state_dict(model_state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{os.fspath(path)}: does not fit this model: {err}") from err
    if optimizer is not None and optim_state:
        optimizer.load_state_dict(optim_state)
    if rng is not None and meta.get("rng_state") is not None:
        set_rng_state(rng, meta["rng_state"])
    return meta
