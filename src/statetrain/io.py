"""The one atomic writer: every file statetrain writes is either complete or absent.

A write goes to a temporary file in the target's directory, is flushed and fsynced, renamed
over the target, and the directory is fsynced: a crash at any instant leaves the old complete
file or the new complete file, never half of one. Whatever fails on the way (a full disk, an
exception inside the writer, Ctrl-C), the temporary file is removed, so failed writes leave no
``.tmp`` debris behind. A write is also refused when its target is one of the command's own
inputs (``protect``): an output path typed by mistake must never destroy the data or the
checkpoint it was computed from.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np


class WriteError(OSError):
    """A file could not be written (or must not be): the message names it and the fix."""


def jsonable(obj: Any) -> Any:
    """NaN/inf become null: JSON has no such numbers, and a reader should see 'missing'."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return jsonable(obj.item())
    return obj


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when both paths name one file (symlinks and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwrite(path: str | Path, protect: Iterable[str | Path]) -> None:
    """Raise WriteError when `path` is one of `protect` (a command's inputs)."""
    for source in protect:
        if source is not None and same_file(path, source):
            raise WriteError(
                f"Refusing to write '{path}': it is the input '{source}' of this command, and "
                "writing there would destroy it. Choose another output path."
            )


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: some filesystems refuse directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], Any],
    *,
    protect: Iterable[str | Path] = (),
) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then rename it over `path`."""
    path = Path(path)
    refuse_overwrite(path, protect)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # failed or interrupted: never leave the temporary file
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(
                f"Could not write '{path}': {exc.strerror or exc}. Any previous version of the "
                "file is intact; free disk space or fix the directory's permissions and run "
                "again."
            ) from exc
        raise
    fsync_dir(path.parent)
    return path


def write_bytes(data: bytes, path: str | Path, *, protect: Iterable[str | Path] = ()) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), protect=protect)


def write_text(text: str, path: str | Path, *, protect: Iterable[str | Path] = ()) -> Path:
    return write_bytes(text.encode(), path, protect=protect)


def write_json(obj: Any, path: str | Path, *, protect: Iterable[str | Path] = ()) -> Path:
    return write_text(json.dumps(jsonable(obj), indent=2) + "\n", path, protect=protect)


def write_npy(array: np.ndarray, path: str | Path, *, protect: Iterable[str | Path] = ()) -> Path:
    """np.save without pickles (an object array cannot be written, so none is ever read)."""
    return atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False), protect=protect)


def write_npz(
    arrays: dict[str, np.ndarray], path: str | Path, *, protect: Iterable[str | Path] = ()
) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(buf.getvalue(), path, protect=protect)


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy `src` to `dst` atomically (a selected checkpoint is never seen half-copied)."""

    def copy(fh: IO[bytes]) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, fh)

    return atomic_write(dst, copy, protect=[src])


def save_figure_file(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """A matplotlib figure, rendered in memory then written atomically (format from suffix)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    return write_bytes(buf.getvalue(), path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
