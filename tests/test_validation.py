"""Every malformed dataset is refused with DatasetError naming the check and the place."""

import pickle

import numpy as np
import pytest

from statetrain import DatasetError, validate_dataset
from statetrain.tasks.frequency.data import generate_dataset


def good() -> np.ndarray:
    return generate_dataset(seed=1, duration_s=0.2)  # 4 streams × 200 rows


def write(tmp_path, array, name="bad.npy"):
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    return path


def test_a_good_file_passes_with_a_report(tmp_path):
    report = validate_dataset(write(tmp_path, good()), min_stream_length=100, n_frequencies=4)
    assert report["valid"] and report["rows"] == 800
    assert [s["start"] for s in report["streams"]] == [0, 200, 400, 600]
    assert len(report["sha256"]) == 64


def _case(name):
    a = good()
    if name == "nan":
        a[123, 0] = np.nan
    elif name == "inf":
        a[77, 5] = np.inf
    elif name == "not binary":
        a[5, 2] = 0.5
    elif name == "two hot":
        a[300, 1] = 1.0
    elif name == "none hot":
        a[300, 1:5] = 0.0
    elif name == "not contiguous":
        a = np.concatenate([a[:100], a[200:400], a[100:200], a[400:]])
    elif name == "target range":
        a[450, 5] = 1.5
    elif name == "3-D":
        a = a[None]
    elif name == "columns":
        a = a[:, :5]
    elif name == "empty":
        a = a[:0]
    elif name == "int":
        a = a.astype(np.int32)
    elif name == "float16":
        a = a.astype(np.float16)
    elif name == "short stream":
        a = a[:250]  # second stream has 50 rows < 100
    elif name == "stream of one row":
        a = np.concatenate([a[:200], a[200:201], a[400:]])
    return a


@pytest.mark.parametrize(
    ("case", "check", "where"),
    [
        ("nan", "finite", "row 123, column 0"),
        ("inf", "finite", "row 77, column 5"),
        ("not binary", "one-hot", "row 5, column 2"),
        ("two hot", "one-hot", "row 300"),
        ("none hot", "one-hot", "row 300"),
        ("not contiguous", "contiguous streams", "row 300"),
        ("target range", "target range", "row 450"),
        ("3-D", "2-D", "(1, 800, 6)"),
        ("columns", "columns", "5 columns"),
        ("empty", "non-empty", "0 rows"),
        ("int", "dtype", "int32"),
        ("float16", "dtype", "float16"),
        ("short stream", "stream length", "row 200"),
        ("stream of one row", "stream length", "1 rows"),
    ],
)
def test_malformed_content_is_refused(tmp_path, case, check, where):
    path = write(tmp_path, _case(case))
    with pytest.raises(DatasetError) as info:
        validate_dataset(path, min_stream_length=100, n_frequencies=4)
    assert info.value.check == check
    assert where in str(info.value) and str(path) in str(info.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        validate_dataset(tmp_path / "nope.npy")
    (tmp_path / "zero.npy").write_bytes(b"")
    with pytest.raises(DatasetError, match="0 bytes"):
        validate_dataset(tmp_path / "zero.npy")


def test_a_pickle_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npy"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DatasetError, match=r"not a NumPy \.npy file"):
        validate_dataset(path)
    obj = write(tmp_path, np.array([Evil()], dtype=object), "object.npy")
    with pytest.raises(DatasetError, match="Python objects"):
        validate_dataset(obj)
    assert not marker.exists()


def test_truncated_and_lying_headers(tmp_path):
    path = write(tmp_path, good())
    raw = path.read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DatasetError, match="truncated"):
        validate_dataset(tmp_path / "trunc.npy")
    # A well-formed header claiming ~10 GB over a tiny file: refused from the header alone.
    lying = tmp_path / "lying.npy"
    with open(lying, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (450_000_000, 6)}
        )
        fh.write(good().tobytes())
    with pytest.raises(DatasetError, match=r"claims shape \(450000000, 6\).*truncated"):
        validate_dataset(lying)
    # A header mangled by hand is reported as malformed, not as a numpy traceback.
    mangled = tmp_path / "mangled.npy"
    mangled.write_bytes(raw.replace(b"'shape': (800, 6)", b"'shape': (8OO, 6)"))
    with pytest.raises(DatasetError, match="readable"):
        validate_dataset(mangled)
