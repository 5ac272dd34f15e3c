"""Dataset validation: every file is checked before any training touches it.

Each failure raises DatasetError with one paragraph: which check failed, where (row/column),
what was found and what was expected. The ``.npy`` header is read and checked by hand before
numpy reads the data, so a pickle, an object array, a truncated file or a header that claims
gigabytes never reaches numpy's loader (and is never unpickled).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

TARGET_EPS = 1e-3
ACCEPTED_DTYPES = (np.dtype("float32"), np.dtype("float64"))


class DatasetError(ValueError):
    """A dataset file failed a validation check; the message says which, where and why."""

    def __init__(self, path: str | Path | None, check: str, detail: str, fix: str = "") -> None:
        self.path = str(path) if path is not None else "<array>"
        self.check = check
        where = f"Dataset '{self.path}'"
        text = f"{where} failed check '{check}': {detail}"
        if fix:
            text += f" {fix}"
        super().__init__(text)


def _read_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, fortran order, dtype and data offset, without reading the data."""
    size = path.stat().st_size
    if size == 0:
        raise DatasetError(
            path,
            "readable",
            "the file is empty (0 bytes).",
            "Regenerate it or point the config at the right file.",
        )
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
        except ValueError as exc:
            raise DatasetError(
                path,
                "readable",
                f"not a NumPy .npy file ({exc}); pickles and other formats are refused.",
                "Save the array with numpy.save(path, array).",
            ) from None
        try:
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise DatasetError(
                path,
                "readable",
                f"the .npy header is malformed ({exc}).",
                "Regenerate the file with numpy.save.",
            ) from None
        offset = fh.tell()
    return shape, fortran, dtype, offset


def load_array(path: str | Path, kinds: str = "f") -> np.ndarray:
    """Load a .npy file safely (no pickles, no lying headers); DatasetError on any problem.

    `kinds` are the numpy dtype kinds accepted: "f" float32/float64 (data), "fiub" also
    integers and booleans (labels, presence matrices). Complex and object arrays never.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(
            path,
            "exists",
            "the file does not exist.",
            "Check the path in the config (data.*_path) or run the workflow to generate it.",
        )
    if not path.is_file():
        raise DatasetError(path, "exists", "the path is not a regular file.")
    shape, _fortran, dtype, offset = _read_header(path)
    if dtype.hasobject:
        raise DatasetError(
            path,
            "dtype",
            f"the array holds Python objects (dtype {dtype}); "
            "object arrays need unpickling and are refused.",
            "Save a float32 array instead.",
        )
    plain = dtype.kind in kinds and dtype.kind != "f" and dtype.fields is None
    if dtype not in ACCEPTED_DTYPES and not plain:
        wanted = "float32 (float64 is converted)" + (
            ", integers or booleans" if set(kinds) - {"f"} else ""
        )
        raise DatasetError(
            path,
            "dtype",
            f"dtype is {dtype}, expected {wanted}"
            + (
                "; complex numbers are refused (no silent dropping of the imaginary part)."
                if dtype.kind == "c"
                else "."
            ),
            "Convert with array.astype(numpy.float32).",
        )
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size - offset
    if actual != expected:
        state = "truncated" if actual < expected else "followed by extra bytes"
        raise DatasetError(
            path,
            "readable",
            f"the header claims shape {shape} of {dtype} ({expected:,} bytes) but "
            f"the file holds {actual:,} data bytes: it is {state}.",
            "Regenerate the file; a partly written file is never trusted.",
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(path, "readable", f"numpy could not read it ({exc}).") from None
    return array


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_csv_strict(path: str | Path, what: str = "table") -> Any:
    """A user's CSV as a pandas DataFrame, or DatasetError: comma-separated, UTF-8, a header
    of unique non-empty names, every row as long as the header.

    pandas alone is lenient where a silent guess corrupts data: it renames a duplicated
    column to 'name.1', pads a short row with NaN and reads a semicolon file as one column.
    """
    import csv

    import pandas as pd

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if header is None:
                raise DatasetError(path, "header", "the file is empty.", f"Write the {what}.")
            width = len(header)
            for line, row in enumerate(rows, start=2):
                if row and len(row) != width:
                    raise DatasetError(
                        path,
                        "row length",
                        f"line {line} has {len(row)} fields where the header has {width}.",
                        "Give every row one value per header column (comma-separated).",
                    )
    except UnicodeDecodeError as exc:
        raise DatasetError(
            path, "encoding", f"not UTF-8 text ({exc.reason}).", "Save the CSV as UTF-8."
        ) from None
    if width == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        raise DatasetError(
            path,
            "separator",
            f"the header '{header[0][:60]}' holds no comma but other separators: the file is "
            "not comma-separated.",
            "Save it with commas between fields (pandas: df.to_csv(path, index=False)).",
        )
    names = [h.strip() for h in header]
    if names and all(is_number(n) for n in names if n) and any(names):
        raise DatasetError(
            path,
            "header",
            f"the first row holds numbers ({', '.join(names[:5])}...) where column names are "
            "expected.",
            f"Add a header row (expected: {what}).",
        )
    empty = [j for j, n in enumerate(names) if not n]
    if empty and empty != [0]:  # an unnamed first column is an index pandas wrote
        raise DatasetError(
            path, "header", f"header column {empty[-1]} has no name.", "Name every column."
        )
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        raise DatasetError(
            path,
            "header",
            f"column name(s) {dupes} appear more than once, so a column cannot be named "
            "unambiguously.",
            "Give every column a unique name.",
        )
    try:
        return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DatasetError(path, "readable", f"pandas could not read it ({exc}).") from None


def is_number(text: str) -> bool:
    """Whether a text reads as a number (a header cell, a YAML value that stayed text)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
