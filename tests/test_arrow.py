"""sfer.from_arrow and sfer.to_arrow (pyarrow; polars where installed), and the CLI's Parquet
form of ``sfer fill``."""

from __future__ import annotations

import numpy as np
import pytest

import sfer
from sfer import reference

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def expected(rows):
    """The COO of a list of Python lists (None: an empty row), by the reference."""
    rows = [r or [] for r in rows]
    splits = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    values = np.array([x for r in rows for x in r], dtype=np.int64)
    return reference.ragged_to_sparse(values, splits)


def assert_coo(got, want):
    for x, y in zip(got, want):
        assert x.shape == y.shape
        np.testing.assert_array_equal(x, y)


ROWS = [[1, 2], None, [3], [], [4, 5, 6]]


@pytest.mark.parametrize("typ", [pa.list_(pa.int64()), pa.large_list(pa.int64())])
def test_list_and_large_list(typ):
    arr = pa.array(ROWS, type=typ)
    got = sfer.from_arrow(arr)
    assert isinstance(got, sfer.SparseCOO)
    assert_coo(got, expected(ROWS))
    assert got.values.dtype == np.int64


def test_values_are_a_view_of_arrow_memory():
    arr = pa.array([[1.5, 2.5], [], [3.5]] * 100, type=pa.list_(pa.float32()))
    coo = sfer.from_arrow(arr)
    buf = np.frombuffer(arr.values.buffers()[1], dtype=np.float32)
    assert np.shares_memory(coo.values, buf)
    sliced = sfer.from_arrow(arr.slice(7, 50))
    assert np.shares_memory(sliced.values, buf)


@pytest.mark.parametrize("start, length", [(1, 4), (2, 2), (3, 0), (0, 5), (4, 1)])
def test_sliced(start, length):
    arr = pa.array(ROWS, type=pa.list_(pa.int64())).slice(start, length)
    assert arr.offsets[0].as_py() != 0 or start == 0
    assert_coo(sfer.from_arrow(arr), expected(ROWS[start:start + length]))


def test_large_offsets_sliced():
    big = pa.array([[7] * 1000] * 300 + [[1, 2], None, [3]], type=pa.large_list(pa.int64()))
    part = big.slice(300)
    assert part.offsets[0].as_py() == 300_000
    assert_coo(sfer.from_arrow(part), expected([[1, 2], None, [3]]))


def test_null_list_backed_by_items():
    # Arrow lets a null list span items: they are left out, the row is empty
    arr = pa.ListArray.from_arrays(pa.array([0, 2, 4, 5]), pa.array([1, 2, 3, 4, 5]),
                                   mask=pa.array([False, True, False]))
    assert_coo(sfer.from_arrow(arr), expected([[1, 2], None, [5]]))


def test_fixed_size_list():
    arr = pa.array([[1, 2], None, [3, 4]], type=pa.list_(pa.int64(), 2))
    assert_coo(sfer.from_arrow(arr), expected([[1, 2], None, [3, 4]]))
    assert_coo(sfer.from_arrow(arr.slice(1)), expected([None, [3, 4]]))


def test_chunked():
    chunks = [pa.array(ROWS[:2], type=pa.list_(pa.int64())),
              pa.array([], type=pa.list_(pa.int64())),
              pa.array(ROWS[2:], type=pa.list_(pa.int64())).slice(1)]
    col = pa.chunked_array(chunks)
    assert_coo(sfer.from_arrow(col), expected(ROWS[:2] + ROWS[3:]))
    empty = pa.chunked_array([], type=pa.list_(pa.int64()))
    coo = sfer.from_arrow(empty)
    assert coo.indices.shape == (0, 2) and coo.dense_shape.tolist() == [0, 0]


def test_nested_lists():
    rows = [[[1, 2], [], [3]], None, [[4]], [None, [5, 6]]]
    arr = pa.array(rows, type=pa.list_(pa.list_(pa.int64())))
    coo = sfer.from_arrow(arr)
    want = reference.ragged_to_sparse(np.array([1, 2, 3, 4, 5, 6]),
                                      [np.array([0, 3, 3, 4, 6]), np.array([0, 2, 2, 3, 4, 4, 6])])
    assert_coo(coo, want)
    assert coo.dense_shape.tolist() == [4, 3, 2]
    chunked = pa.chunked_array([arr.slice(0, 2), arr.slice(2)])
    assert_coo(sfer.from_arrow(chunked), want)


def test_nested_fixed_inside_list():
    arr = pa.array([[[1, 2], [3, 4]], [], [[5, 6]]], type=pa.list_(pa.list_(pa.int64(), 2)))
    coo = sfer.from_arrow(arr)
    assert coo.dense_shape.tolist() == [3, 2, 2]
    assert coo.indices.tolist()[-2:] == [[2, 0, 0], [2, 0, 1]]


def test_null_item_names_row_and_position():
    arr = pa.array([[1, 2], [3, None, 4]], type=pa.list_(pa.int64()))
    with pytest.raises(ValueError, match="null item at row 1, position 1"):
        sfer.from_arrow(arr)
    with pytest.raises(ValueError, match="null item at row 0, position 1"):
        sfer.from_arrow(arr.slice(1))
    col = pa.chunked_array([pa.array([[1]] * 3, type=arr.type), arr])
    with pytest.raises(ValueError, match="null item at row 4, position 1"):
        sfer.from_arrow(col)
    nested = pa.array([[[1]], [[2], [3, None]]], type=pa.list_(pa.list_(pa.int64())))
    with pytest.raises(ValueError, match=r"null item at row 1, position \(1, 1\)"):
        sfer.from_arrow(nested)


@pytest.mark.parametrize("bad", [pa.array([1, 2]), np.arange(3), [[1, 2]],
                                 pa.chunked_array([pa.array(["a"])])])
def test_not_a_list_column(bad):
    with pytest.raises(TypeError, match="from_arrow takes a pyarrow ListArray"):
        sfer.from_arrow(bad)


def test_other_value_types():
    arr = pa.array([["a", "bc"], [], ["d"]])
    assert sfer.from_arrow(arr).values.tolist() == ["a", "bc", "d"]
    arr = pa.array([[True], [False, True]])
    assert sfer.from_arrow(arr).values.tolist() == [True, False, True]


def test_num_threads_and_large():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 20, 20_000)
    values = pa.array(rng.standard_normal(int(lengths.sum())))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    arr = pa.ListArray.from_arrays(offsets, values)
    want = sfer.from_arrow(arr, num_threads=1)
    for t in (2, 4, 16):
        assert_coo(sfer.from_arrow(arr, num_threads=t), want)


def test_polars_series():
    pl = pytest.importorskip("polars")
    s = pl.Series("ids", [[1, 2], None, [3], []])
    assert_coo(sfer.from_arrow(s), expected([[1, 2], None, [3], []]))


# --------------------------------------------------------------------- to_arrow


def test_to_arrow():
    coo = expected(ROWS)
    arr = sfer.to_arrow(*coo)
    assert isinstance(arr, pa.ListArray)
    assert arr.to_pylist() == [[1, 2], [], [3], [], [4, 5, 6]]
    assert arr.null_count == 0


def test_round_trip_through_arrow():
    arr = pa.array(ROWS, type=pa.list_(pa.int64()))
    back = sfer.to_arrow(*sfer.from_arrow(arr))
    assert back.to_pylist() == [r or [] for r in ROWS]


def test_to_arrow_rejects_what_from_sparse_rejects():
    with pytest.raises(ValueError, match="not right-ragged"):
        sfer.to_arrow([[0, 1]], [1.0], [1, 2])


# --------------------------------------------------------------------- the CLI


def write_parquet(path, rows, name="ids"):
    pq.write_table(pa.table({name: pa.array(rows, type=pa.list_(pa.int64())),
                             "other": pa.array(range(len(rows)))}), path, row_group_size=2)


def run_cli(argv, tmp_path, monkeypatch, capsys):
    from sfer._cli import main

    monkeypatch.chdir(tmp_path)
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_fill_parquet(tmp_path, monkeypatch, capsys):
    write_parquet(tmp_path / "d.parquet", ROWS)
    status, out, err = run_cli(["fill", "d.parquet", "--column", "ids", "--default", "-1",
                                "-o", "out.npz"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    assert "2 of 5 rows were empty" in out
    with np.load(tmp_path / "out.npz") as z:
        want = sfer.sparse_fill_empty_rows(*expected(ROWS), -1)
        for name in want._fields:
            np.testing.assert_array_equal(z[name], getattr(want, name))
        assert z["dense_shape"].tolist() == [5, 3]
        assert z["output_values"].tolist() == [1, 2, -1, 3, -1, 4, 5, 6]


@pytest.mark.parametrize("argv, status, words", [
    (["fill", "nope.parquet", "--column", "ids", "--default", "0", "-o", "o.npz"], 2,
     "cannot read Parquet file 'nope.parquet'"),
    (["fill", "d.parquet", "--column", "nope", "--default", "0", "-o", "o.npz"], 2,
     "has no column 'nope'"),
    (["fill", "d.parquet", "--column", "other", "--default", "0", "-o", "o.npz"], 2,
     "from_arrow takes"),
    (["fill", "d.parquet", "--column", "ids", "--default", "1.5", "-o", "o.npz"], 2,
     "default_value"),
    (["fill", "d.parquet", "--column", "ids", "--default", "0", "-o", "nodir/o.npz"], 1,
     "cannot write"),
    (["fill", "d.parquet", "x.npy", "--column", "ids", "--default", "0", "-o", "o.npz"], 2,
     "--column takes one file"),
    (["fill", "d.parquet", "--default", "0", "-o", "o.npz"], 2,
     "expected INDICES.npy VALUES.npy DENSE_SHAPE.npy"),
    (["fill", "text.parquet", "--column", "ids", "--default", "0", "-o", "o.npz"], 2,
     "cannot read Parquet file"),
])
def test_cli_fill_parquet_errors(argv, status, words, tmp_path, monkeypatch, capsys):
    write_parquet(tmp_path / "d.parquet", ROWS)
    (tmp_path / "text.parquet").write_text("not parquet")
    got, out, err = run_cli(argv, tmp_path, monkeypatch, capsys)
    assert got == status, err
    assert words in err


def test_cli_fill_parquet_null_item(tmp_path, monkeypatch, capsys):
    pq.write_table(pa.table({"ids": pa.array([[1], [2, None]])}), tmp_path / "n.parquet")
    status, _, err = run_cli(["fill", "n.parquet", "--column", "ids", "--default", "0", "-o",
                              "o.npz"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "null item at row 1, position 1" in err
