"""The ``sfer`` command-line tool (also ``python -m sfer``).

Commands::

    sfer [demo] [--size N_FULL] [--dtype DTYPE] [--num-threads N] [--repeat R] [--seed S]
    sfer grad RIM.npy GRAD.npy -o OUT.npz [--num-threads N] [-q]
    sfer fill INDICES.npy VALUES.npy DENSE_SHAPE.npy --default V -o OUT.npz [--num-threads N] [-q]
    sfer fill DATA.parquet --column NAME --default V -o OUT.npz [--num-threads N] [-q]

``--threads N`` is an alias of ``--num-threads N`` in every command.
    sfer --version | --help

With no command, ``sfer`` runs ``demo``.  Only NumPy and the standard library are
used.  This module imports NumPy, sfer's API and optional packages (ml_dtypes) only
inside the commands, so ``--help`` and ``--version`` do no work beyond importing the
package itself.

Exit status: 0 on success, 2 for usage errors and bad input (like argparse),
1 for other failures (output not writable, out of memory, demo mismatch),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from sfer import _dtypes, _errors
from sfer._runtime import describe_threads

PROG = "sfer"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: --dtype choices of the demo: the grad op's dtypes (sfer/_dtypes.py, the one table).
DEMO_DTYPES = _dtypes.GRAD_VALUE_NAMES

_DEFAULT_SIZE = 1_000_000
_DEFAULT_REPEAT = 7
_SAMPLE_SECONDS = 0.05  # the shortest timing sample (calls are batched up to it)


class CLIError(Exception):
    """An error reported as ``sfer: error: <message>`` with exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- helpers


def _version() -> str:
    try:
        from sfer._version import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - only when _version.py is missing
        try:
            from importlib.metadata import version

            return version("sfer")
        except Exception:
            return "unknown"


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _reason(exc: BaseException) -> str:
    """Short reason of an OSError ("No such file or directory"), else str(exc)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text if text else type(exc).__name__


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _size(text: str) -> int:
    """A non-negative integer; also accepts 1_000_000 and 1e6."""
    try:
        value = int(text, 10)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number.is_integer()):
            raise argparse.ArgumentTypeError(
                f"expected a non-negative integer, got {text!r}") from None
        value = int(number)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.3f} us"
    return f"{seconds * 1e9:.1f} ns"


def _fmt_list(values: Any) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values.tolist()) + "]"


# --------------------------------------------------------------------------- parser


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "sfer: TensorFlow's SparseFillEmptyRows and its gradient, "
            "SparseFillEmptyRowsGrad, for NumPy, without TensorFlow. 'fill' adds a default "
            "entry to each empty row of a sparse tensor; 'grad' takes a gradient of its "
            "output values back: d_values[j] = grad_values[reverse_index_map[j]]; "
            "d_default_value = sum of grad_values[k] over the positions k that "
            "reverse_index_map does not reference. With no COMMAND, runs 'demo'."
        ),
        epilog="Run 'sfer COMMAND --help' for the options of a command.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    _add_demo_command(sub)
    _add_grad_command(sub)
    _add_fill_command(sub)
    return parser


def _add_demo_command(sub: Any) -> None:
    """The ``demo`` command's parser (what plain ``sfer`` runs)."""
    demo = sub.add_parser(
        "demo",
        help="run a small worked example, then time both ops against NumPy composites (default)",
        description=(
            "Run both ops on a small built-in example, then on generated data: the forward "
            "op on a sorted sparse tensor with about N_FULL output entries (10% of rows "
            "empty), against the NumPy composite bincount + concatenate + "
            "argsort(kind='stable'); and the grad on N_FULL gradients (10% of positions "
            "unreferenced, a strictly increasing int64 map as produced by "
            "SparseFillEmptyRows), against g[rim]; mask = np.ones(N_full, bool); "
            "mask[rim] = False; g[mask].sum(). Each compares the time per call (median) and "
            "checks sfer's result against sfer.reference (the ops in plain NumPy)."
        ),
    )
    demo.add_argument("--size", type=_size, default=_DEFAULT_SIZE, metavar="N_FULL",
                      help=f"length of grad_values, and about the forward op's output length "
                           f"(default: {_DEFAULT_SIZE:_})")
    demo.add_argument("--dtype", default="float32", choices=DEMO_DTYPES, metavar="DTYPE",
                      help="dtype of grad_values: " + ", ".join(DEMO_DTYPES)
                      + " (default: float32; bfloat16 needs ml_dtypes)")
    _add_threads_option(demo)
    demo.add_argument("--repeat", type=_positive_int, default=_DEFAULT_REPEAT, metavar="R",
                      help=f"timing samples per method; the median is reported "
                           f"(default: {_DEFAULT_REPEAT})")
    demo.add_argument("--seed", type=int, default=0, metavar="S",
                      help="seed of the generated data (default: 0)")



def _add_grad_command(sub: Any) -> None:
    """The ``grad`` command's parser."""
    grad = sub.add_parser(
        "grad",
        help="compute the gradient of two .npy files into an .npz file",
        description=(
            "Load reverse_index_map from RIM.npy and grad_values from GRAD.npy "
            "(memory-mapped, read-only; pickled object arrays are refused), compute "
            "sfer.sparse_fill_empty_rows_grad and write OUT.npz holding the arrays "
            "'d_values' (shape (N,)) and 'd_default_value' (0-d), both of grad_values' dtype. "
            "OUT.npz is written to exactly the path given."
        ),
    )
    grad.add_argument("reverse_index_map", metavar="RIM.npy",
                      help="1-D integer array: the reverse index map from SparseFillEmptyRows")
    grad.add_argument("grad_values", metavar="GRAD.npy",
                      help="1-D array: the gradients from backprop (length N_full)")
    grad.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                      help="output file (written atomically)")
    _add_threads_option(grad)
    grad.add_argument("-q", "--quiet", action="store_true",
                      help="print nothing on success")



def _add_fill_command(sub: Any) -> None:
    """The ``fill`` command's parser: its .npy form and its Parquet form (``--column``)."""
    fill = sub.add_parser(
        "fill",
        help="fill the empty rows of a sparse tensor given as three .npy files (or a list "
             "column of a Parquet file), into an .npz file",
        usage="%(prog)s INDICES.npy VALUES.npy DENSE_SHAPE.npy --default V -o OUT.npz "
              "[options]\n       %(prog)s DATA.parquet --column NAME --default V -o OUT.npz "
              "[options]",
        description=(
            "Load indices from INDICES.npy, values from VALUES.npy and dense_shape from "
            "DENSE_SHAPE.npy (memory-mapped, read-only; pickled arrays, i.e. object and "
            "StringDType values, are refused: save strings as 'U' or 'S'), or, with --column, "
            "the list column NAME of DATA.parquet as sfer.from_arrow reads it (needs pyarrow: "
            "sfer[arrow]); compute sfer.sparse_fill_empty_rows and write OUT.npz holding the "
            "arrays 'output_indices' (int64, shape (N_full, R)), 'output_values' (shape "
            "(N_full,)), 'empty_row_indicator' (bool, shape (dense_shape[0],)) and "
            "'reverse_index_map' (int64, shape (N,)); from Parquet also 'dense_shape'. "
            "OUT.npz is written to exactly the path given."
        ),
    )
    fill.add_argument("indices", metavar="INDICES.npy",
                      help="2-D integer array [N, R]: the entries' coordinates (column 0: "
                           "row); with --column: DATA.parquet")
    fill.add_argument("values", metavar="VALUES.npy", nargs="?",
                      help="1-D array [N]: the entries' values")
    fill.add_argument("dense_shape", metavar="DENSE_SHAPE.npy", nargs="?",
                      help="1-D integer array [R]: the dense tensor's shape")
    fill.add_argument("--column", metavar="NAME", default=None,
                      help="read DATA.parquet's list column NAME (list, large_list or "
                           "fixed_size_list, nested or not; a null list is an empty row)")
    fill.add_argument("--default", required=True, metavar="V", dest="default_value",
                      help="default_value, the value of the entry added to each empty row, "
                           "read as VALUES' dtype: a number (an int if it parses as one, else "
                           "a float or complex as Python reads it); true/false/1/0 for bool; "
                           "the text itself for strings (encoded as given on the command line "
                           "for 'S') and datetimes. It must fit VALUES' dtype (300 does not fit "
                           "int8, 1.5 no integer dtype)")
    fill.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                      help="output file (written atomically)")
    _add_threads_option(fill)
    fill.add_argument("-q", "--quiet", action="store_true",
                      help="print nothing on success")


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    """The one thread option of every subcommand: ``--num-threads N`` (the API's
    ``num_threads``), also spelled ``--threads N`` (its name before 0.3)."""
    parser.add_argument("--num-threads", "--threads", dest="threads", type=_positive_int,
                        default=None, metavar="N",
                        help="num_threads (default: sfer.get_num_threads(): OMP_NUM_THREADS "
                             "if set, else the CPUs this process may use); the result is the "
                             "same for every N. --threads is an alias")


def _default_takes_next(args_list: List[str]) -> List[str]:
    """``fill``'s ``--default V`` takes V verbatim, as getopt does, even where V starts with
    '-' (argparse would take -inf, -1e-3 or -x for an option): joined as ``--default=V``."""
    out: List[str] = []
    i = 0
    while i < len(args_list):
        arg = args_list[i]
        if arg == "--":  # the end of the options: the rest is positional
            return out + args_list[i:]
        if (len(arg) > 3 and "--default".startswith(arg) and i + 1 < len(args_list)
                and args_list[i + 1] != "--"):  # argparse would drop a value "--"
            out.append(f"{arg}={args_list[i + 1]}")  # --default, or --de... (its abbreviation)
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def _is_top_level_option(arg: str) -> bool:
    if arg in ("-h", "-V"):
        return True
    if arg.startswith("--") and len(arg) > 2:
        name = arg.split("=", 1)[0]
        return "--help".startswith(name) or "--version".startswith(name)
    return False


# ------------------------------------------------------------------- grad and fill


def _load_npy(path: str, what: str) -> Any:
    """Memory-map a .npy file read-only; CLIError (status 2) for anything unusable.  Pickles
    (object and StringDType arrays) are never loaded: unpickling can run arbitrary code."""
    import numpy as np

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise CLIError(f"cannot read {what} file {path!r}: {_reason(exc)}") from None
    except (ValueError, EOFError, SyntaxError) as exc:  # not .npy, pickled, truncated, corrupt
        if _holds_objects(path):
            raise CLIError(f"{what} file {path!r} holds Python objects (an object or "
                           "StringDType array, stored as a pickle); sfer does not load "
                           "pickles") from None
        raise CLIError(f"{what} file {path!r} is not a usable .npy file ({_reason(exc)})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive loads as a mapping
        with contextlib.suppress(Exception):
            array.close()
        raise CLIError(f"{what} file {path!r} is an .npz archive, not a .npy file")
    return array


def _write_npz(path: str, arrays: Dict[str, Any]) -> None:
    """Write an uncompressed .npz to exactly ``path`` (no ``.npz`` appended), atomically."""
    import numpy as np

    fd, tmp = tempfile.mkstemp(prefix=".sfer-", suffix=".npz.tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _holds_objects(path: str) -> bool:
    """Whether ``path`` is a .npy file whose header declares Python objects (a pickle)."""
    import numpy as np

    fmt = np.lib.format
    with contextlib.suppress(Exception), open(path, "rb") as fh:
        read_header = {(1, 0): fmt.read_array_header_1_0,
                       (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(fh))
        if read_header is not None:
            return bool(read_header(fh)[2].hasobject)
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _call_op(op: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``op(*args, **kwargs)``; the op's errors for bad input become CLIError (status 2)."""
    try:
        return op(*args, **kwargs)
    except (TypeError, ValueError, IndexError) as exc:
        raise CLIError(str(exc)) from None


def _save_npz(path: str, arrays: Dict[str, Any]) -> None:
    """:func:`_write_npz`; an unwritable output becomes CLIError (status 1)."""
    try:
        _write_npz(path, arrays)
    except OSError as exc:
        raise CLIError(f"cannot write {path!r}: {_reason(exc)}", EXIT_FAILURE) from None


def _cmd_grad(args: argparse.Namespace) -> int:
    import numpy as np

    import sfer

    rim = _load_npy(args.reverse_index_map, "reverse_index_map")
    grad = _load_npy(args.grad_values, "grad_values")
    d_values, d_default_value = _call_op(sfer.sparse_fill_empty_rows_grad, rim, grad,
                                         num_threads=args.threads)
    _save_npz(args.output, {
        "d_values": np.asarray(d_values),
        "d_default_value": np.asarray(d_default_value),
    })
    if not args.quiet:
        print(f"wrote {args.output}: d_values {d_values.dtype} shape {d_values.shape}, "
              f"d_default_value = {str(d_default_value)}")
    return EXIT_OK


_BOOL_WORDS = {"true": True, "1": True, "false": False, "0": False}


def _default_from_text(text: str, dtype: Any) -> Any:
    """``--default``'s text as a Python value for values of ``dtype``; whether it fits the
    dtype is left to sfer.sparse_fill_empty_rows (its rules, its messages)."""
    import numpy as np

    kind = dtype.kind
    if kind == "b":
        try:
            return _BOOL_WORDS[text.strip().lower()]
        except KeyError:
            raise CLIError(f"--default must be true, false, 1 or 0 for values of dtype bool, "
                           f"got {text!r}") from None
    if kind == "S":
        return os.fsencode(text)  # the bytes as given on the command line
    if kind in "UOTM" or issubclass(dtype.type, np.void):
        # strings and objects: the text; datetime64: NumPy parses it; records and raw bytes:
        # sfer says why a str does not do
        return text
    # numbers: integers, floats, complex, timedelta64 and ml_dtypes' types (bfloat16, ...)
    for parse in (int, float, complex):
        try:
            return parse(text)
        except ValueError:
            pass
    raise CLIError(f"--default {text!r} is not a number (values have dtype {dtype})")


def _load_parquet_column(path: str, name: str) -> Any:
    """Column ``name`` of the Parquet file ``path`` (a pyarrow ChunkedArray); CLIError
    (status 2) for a file or column that cannot be read, (status 1) without pyarrow."""
    try:
        import pyarrow.parquet as pq  # type: ignore  # (no stubs; absent without sfer[arrow])
    except ImportError:
        raise CLIError(_errors.arrow_needs_pyarrow("sfer fill DATA.parquet"),
                       EXIT_FAILURE) from None
    try:
        schema = pq.read_schema(path)
        if name not in schema.names:
            raise CLIError(f"{path!r} has no column {name!r} (its columns: "
                           f"{', '.join(schema.names)})")
        return pq.read_table(path, columns=[name]).column(name)
    except (OSError, ValueError) as exc:  # missing, unreadable, not Parquet (ArrowInvalid)
        raise CLIError(f"cannot read Parquet file {path!r}: {_reason(exc)}") from None


def _cmd_fill_parquet(args: argparse.Namespace) -> int:
    import numpy as np

    import sfer

    column = _load_parquet_column(args.indices, args.column)
    coo = _call_op(sfer.from_arrow, column, num_threads=args.threads)
    default_value = _default_from_text(args.default_value, coo.values.dtype)
    result = _call_op(sfer.sparse_fill_empty_rows, *coo, default_value,
                      num_threads=args.threads)
    arrays = {name: np.asarray(array) for name, array in zip(result._fields, result)}
    _save_npz(args.output, {**arrays, "dense_shape": coo.dense_shape})
    if not args.quiet:
        empty = result.empty_row_indicator
        print(f"wrote {args.output}: column {args.column!r} of {args.indices}, "
              f"output_indices shape {result.output_indices.shape}, output_values "
              f"{result.output_values.dtype} shape {result.output_values.shape}; "
              f"{int(np.count_nonzero(empty))} of {empty.shape[0]} rows were empty and got "
              f"the default")
    return EXIT_OK


def _cmd_fill(args: argparse.Namespace) -> int:
    import numpy as np

    import sfer

    given = (args.values is not None) + (args.dense_shape is not None)
    if args.column is not None:
        if given:
            raise CLIError("fill: --column takes one file, DATA.parquet")
        return _cmd_fill_parquet(args)
    if given < 2:
        raise CLIError("fill: expected INDICES.npy VALUES.npy DENSE_SHAPE.npy, or "
                       "DATA.parquet --column NAME")
    indices = _load_npy(args.indices, "indices")
    values = _load_npy(args.values, "values")
    dense_shape = _load_npy(args.dense_shape, "dense_shape")
    default_value = _default_from_text(args.default_value, values.dtype)
    result = _call_op(sfer.sparse_fill_empty_rows, indices, values, dense_shape, default_value,
                      num_threads=args.threads)
    _save_npz(args.output, {name: np.asarray(array)
                            for name, array in zip(result._fields, result)})
    if not args.quiet:
        empty = result.empty_row_indicator
        print(f"wrote {args.output}: output_indices shape {result.output_indices.shape}, "
              f"output_values {result.output_values.dtype} shape "
              f"{result.output_values.shape}; {int(np.count_nonzero(empty))} of "
              f"{empty.shape[0]} rows were empty and got the default")
    return EXIT_OK


# --------------------------------------------------------------------------- demo


def _resolve_dtype(name: str) -> Tuple[Any, Any]:
    """Return (dtype, finfo-or-iinfo-or-None)."""
    import numpy as np

    if name == "bfloat16":
        bf16 = _dtypes.bfloat16()
        if bf16 is None:
            raise CLIError(f"--dtype {_errors.bfloat16_needs_ml_dtypes()} "
                           "(pip install ml_dtypes)")
        ml_dtypes: Any = importlib.import_module("ml_dtypes")
        return bf16, ml_dtypes.finfo(ml_dtypes.bfloat16)
    dtype = _dtypes.resolve(name)
    if dtype.kind in "iu":
        return dtype, np.iinfo(dtype)
    return dtype, np.finfo(dtype)


def _generate(np: Any, n_full: int, dtype: Any, info: Any, seed: int) -> Tuple[Any, Any]:
    """grad_values of length n_full and a strictly increasing int64 map missing 10%."""
    rng = np.random.default_rng(seed)
    referenced = np.ones(n_full, dtype=bool)
    referenced[rng.choice(n_full, size=n_full // 10, replace=False)] = False
    rim = np.flatnonzero(referenced).astype(np.int64, copy=False)
    if dtype.kind in "iu":
        grad = rng.integers(int(info.min), int(info.max), size=n_full, dtype=dtype,
                            endpoint=True)
    elif dtype.kind == "c":
        parts = rng.standard_normal((2, n_full))
        grad = (parts[0] + 1j * parts[1]).astype(dtype)
    else:  # float16/32/64 and bfloat16
        grad = rng.standard_normal(n_full, dtype=np.float32).astype(dtype)
    return rim, grad


def _small_example(np: Any, sfer: Any, say: Callable[..., None]) -> bool:
    """The README's worked example: the forward op, then its grad fed with its map."""
    indices = np.array([[0, 1], [0, 3], [2, 0], [3, 1]], dtype=np.int64)
    values = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    dense_shape = np.array([5, 6], dtype=np.int64)
    fill = sfer.sparse_fill_empty_rows(indices, values, dense_shape, -1.0)
    rim = fill.reverse_index_map
    grad = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0], dtype=np.float32)
    d_values, d_default_value = sfer.sparse_fill_empty_rows_grad(rim, grad)
    fill_ok = bool(
        fill.output_indices.tolist() == [[0, 1], [0, 3], [1, 0], [2, 0], [3, 1], [4, 0]]
        and fill.output_values.dtype == np.float32
        and fill.output_values.tolist() == [1.0, 2.0, -1.0, 3.0, 4.0, -1.0]
        and fill.empty_row_indicator.tolist() == [False, True, False, False, True]
        and rim.dtype == np.int64 and rim.tolist() == [0, 1, 3, 4])
    expected = np.array([0.5, 1.0, 4.0, 8.0], dtype=np.float32)
    grad_ok = bool(d_values.dtype == expected.dtype
                   and d_values.tobytes() == expected.tobytes() and d_default_value == 18.0)
    say("1) Small example: the forward op and its grad as a pair. A 5 x 6 sparse tensor has")
    say("   entries in rows 0, 2 and 3; rows 1 and 4 are empty.")
    say("   a) sparse_fill_empty_rows(indices, values, dense_shape, default_value = -1) groups")
    say("      the entries by row and adds an entry [r, 0] = -1 in each empty row r:")
    say(f"      indices             = {indices.tolist()}   (int64)")
    say(f"      values              = {_fmt_list(values)}   ({values.dtype})")
    say(f"      dense_shape         = {dense_shape.tolist()}")
    say(f"      output_indices      = {fill.output_indices.tolist()}")
    say(f"      output_values       = {_fmt_list(fill.output_values)}")
    say(f"      empty_row_indicator = {fill.empty_row_indicator.tolist()}")
    say(f"      reverse_index_map   = {rim.tolist()}   (the output position of each entry)")
    if not fill_ok:
        say("      MISMATCH: expected output_indices = [[0, 1], [0, 3], [1, 0], [2, 0], [3, 1], "
            "[4, 0]], output_values = [1, 2, -1, 3, 4, -1], empty_row_indicator = "
            "[False, True, False, False, True], reverse_index_map = [0, 1, 3, 4]")
    say("   b) sparse_fill_empty_rows_grad(reverse_index_map, grad_values) takes a gradient of")
    say("      the 6 output_values (N_full = 6) back to the 4 values (N = 4) and default_value:")
    say("      d_values[j] = grad_values[reverse_index_map[j]]; d_default_value = the sum of the")
    say("      grad_values[k] whose k does not occur in reverse_index_map (the filled-in entries")
    say("      at output positions 2 and 5).")
    say(f"      reverse_index_map   = {_fmt_list(rim)}   (int64, from a)")
    say(f"      grad_values         = {_fmt_list(grad)}   ({grad.dtype})")
    say(f"      d_values            = {_fmt_list(d_values)}")
    say(f"      d_default_value     = {str(d_default_value)}   "
        "(= grad_values[2] + grad_values[5] = 2 + 16)")
    if not grad_ok:
        say("      MISMATCH: expected d_values = [0.5, 1, 4, 8] and d_default_value = 18")
    return fill_ok and grad_ok


Rows = List[Tuple[str, str]]


def _time_pair(run_sfer: Callable[[], Any], run_numpy: Callable[[], Any], repeat: int,
               what: str) -> Rows:
    """Times sfer against its NumPy composite (interleaved rounds, medians): the rows."""
    from sfer._timing import time_interleaved

    t_sfer, t_numpy = (t.seconds for t in time_interleaved(
        [run_sfer, run_numpy], rounds=repeat, per_round=1,
        min_sample_seconds=_SAMPLE_SECONDS))
    ratio = t_numpy / t_sfer if t_sfer > 0 else math.inf
    per_call = f"per call (median of {repeat})"
    return [("sfer", f"{_fmt_seconds(t_sfer):>11} {per_call}"),
            ("NumPy composite", f"{_fmt_seconds(t_numpy):>11} {per_call}"),
            ("", what),
            ("ratio NumPy/sfer", f"{ratio:>10.2f}x")]


def _generate_sparse(np: Any, n_full: int, dtype: Any, info: Any, seed: int) -> Dict[str, Any]:
    """A 2-D sparse tensor whose filled output has about n_full entries: rows sorted, 10% of
    them empty, the others with 1 to 3 entries."""
    rng = np.random.default_rng([seed, 1])
    dense_rows = max(1, n_full * 10 // 19)  # 0.9 * 2 entries + 0.1 defaults per row
    counts = np.where(rng.random(dense_rows) < 0.1, 0, rng.integers(1, 4, dense_rows))
    rows = np.repeat(np.arange(dense_rows, dtype=np.int64), counts)
    indices = np.stack([rows, rng.integers(0, 1000, rows.shape[0])], axis=1)
    _, values = _generate(np, rows.shape[0], dtype, info, seed)
    return {"indices": indices, "values": values,
            "dense_shape": np.array([dense_rows, 1000], dtype=np.int64), "default_value": 1}


def _numpy_fill(np: Any, indices: Any, values: Any, dense_shape: Any, default_value: Any
                ) -> Tuple[Any, Any, Any, Any]:
    """SparseFillEmptyRows as a NumPy user writes it: the empty rows' entries appended, then a
    stable sort by row."""
    rows = indices[:, 0]
    empty = np.bincount(rows, minlength=int(dense_shape[0])) == 0
    extra = np.zeros((int(np.count_nonzero(empty)), indices.shape[1]), dtype=np.int64)
    extra[:, 0] = np.flatnonzero(empty)
    all_indices = np.concatenate([indices, extra])
    all_values = np.concatenate([values, np.full(extra.shape[0], default_value, values.dtype)])
    order = np.argsort(all_indices[:, 0], kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(order.shape[0])
    return all_indices[order], all_values[order], empty, where[:indices.shape[0]]


def _demo_fill(np: Any, sfer: Any, args: argparse.Namespace, dtype: Any, info: Any,
               say: Callable[..., None]) -> Tuple[bool, Rows]:
    """Part 2 of the demo: the forward op on generated data, timed against NumPy and checked
    bit for bit against sfer.reference."""
    from sfer import reference

    data = _generate_sparse(np, args.size, dtype, info, args.seed)
    n, rows = data["indices"].shape[0], int(data["dense_shape"][0])
    say(f"2) The forward op on generated data: {rows:,} rows (10% empty, the others with 1 to")
    say(f"   3 entries), N = {n:,} {dtype.name} entries, sorted by row; default_value = 1")

    def run_sfer() -> Any:
        return sfer.sparse_fill_empty_rows(**data, num_threads=args.threads)

    def run_numpy() -> Any:
        return _numpy_fill(np, **data)

    result = run_sfer()  # checked below; also the warm-up
    run_numpy()
    table = _time_pair(run_sfer, run_numpy, args.repeat,
                       "bincount + concatenate + argsort(kind='stable') + gathers")
    expected = reference.sparse_fill_empty_rows(**data)
    agree = all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
                for a, b in zip(result, expected))
    table.append(("agree", "yes (all four outputs bit-identical to sfer.reference's)" if agree
                  else "NO: the outputs differ from sfer.reference's"))
    return agree, table


def _demo_grad(np: Any, sfer: Any, args: argparse.Namespace, dtype: Any, info: Any,
               say: Callable[..., None]) -> Tuple[bool, Rows]:
    """Part 3 of the demo: the grad on generated data, timed against NumPy and checked
    against sfer.reference (d_values bit for bit, d_default_value within its bound)."""
    from sfer import reference

    n_full = args.size
    rim, grad = _generate(np, n_full, dtype, info, args.seed)
    n = rim.shape[0]
    sum_dtype = dtype if dtype.kind in "iu" else None  # integer sums wrap, as in sfer
    say(f"3) The grad on generated data: N_full = {n_full:,} {dtype.name} gradients, "
        f"N = {n:,} map entries")
    say(f"   (int64 map, strictly increasing as from SparseFillEmptyRows; "
        f"{n_full - n:,} positions unreferenced)")

    def run_sfer() -> Any:
        return sfer.sparse_fill_empty_rows_grad(rim, grad, num_threads=args.threads)

    def run_numpy() -> Any:
        mask = np.ones(n_full, dtype=bool)
        mask[rim] = False
        return grad[rim], grad[mask].sum(dtype=sum_dtype)

    s_values, s_default = run_sfer()  # the results checked below; also the warm-up
    _, n_default = run_numpy()
    table = _time_pair(run_sfer, run_numpy, args.repeat,
                       "g[rim]; mask = np.ones(N_full, bool); mask[rim] = False; "
                       "g[mask].sum()")
    problems = reference.mismatches((s_values, s_default), rim, grad)
    table += _grad_default_rows(np, reference, rim, grad, s_default, n_default)
    if not problems:
        note = ("equal (integer sums wrap modulo 2^bits)" if dtype.kind in "iu"
                else "within sfer.reference's error bound")
        table.append(("agree", f"yes (d_values bit-identical to sfer.reference's; "
                               f"d_default_value {note})"))
    else:
        table.append(("agree", "NO: " + "; ".join(problems)))
    return not problems, table


def _grad_default_rows(np: Any, reference: Any, rim: Any, grad: Any, s_default: Any,
                       n_default: Any) -> Rows:
    """d_default_value from sfer and from NumPy against the exact sum."""
    masked = grad[reference.unreferenced(rim, grad.shape[0])]
    if grad.dtype.kind in "iu":
        return [("d_default_value", f"sfer {str(s_default)}, NumPy {str(n_default)}, "
                                    f"reference {str(reference.exact_sum(masked))}")]
    is_complex = grad.dtype.kind == "c"
    exact = complex(reference.exact_sum(masked, np.complex128 if is_complex else np.float64))
    exact_text = f"{exact:.10g}" if is_complex else f"{exact.real:.10g}"
    s_c, n_c = complex(s_default), complex(n_default)
    return [("d_default_value", f"sfer {str(s_default)}, NumPy {str(n_default)}, "
                                f"exact {exact_text} (sfer.reference)"),
            ("|error| vs exact", f"sfer {abs(s_c - exact):.3g}, NumPy {abs(n_c - exact):.3g}")]


def _threads_rows(sfer: Any, threads: Optional[int]) -> Rows:
    """What the demo says about the thread count sfer used (the words: sfer._runtime's)."""
    return [("sfer.openmp_enabled()", str(bool(sfer.openmp_enabled()))),
            ("threads", describe_threads(threads))]


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    import sfer

    out = sys.stdout

    def say(*parts: Any) -> None:
        print(*parts, file=out)

    def show(rows: Rows) -> None:
        for label, text in rows:
            say(f"   {label:<22} {text}")
        say()
        out.flush()

    dtype, info = _resolve_dtype(args.dtype)
    say(f"sfer {_version()}: TensorFlow's SparseFillEmptyRows and SparseFillEmptyRowsGrad "
        f"for NumPy (NumPy {np.__version__}, Python {sys.version.split()[0]})")
    say()
    ok = _small_example(np, sfer, say)
    say()
    out.flush()
    fill_ok, rows = _demo_fill(np, sfer, args, dtype, info, say)
    show(rows)
    grad_ok, rows = _demo_grad(np, sfer, args, dtype, info, say)
    show(rows + _threads_rows(sfer, args.threads))
    if not (ok and fill_ok and grad_ok):
        _error("sfer and the expected/reference results disagree (please report this)")
        return EXIT_FAILURE
    return EXIT_OK


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``sfer`` command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] != "-"
                         and not _is_top_level_option(args_list[0])):
        args_list.insert(0, "demo")  # bare `sfer` / `sfer --size 1000` mean `sfer demo ...`
    if args_list[0] == "fill":
        args_list = _default_takes_next(args_list)

    parser = _build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, usage errors (already printed)
        code = exc.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_USAGE

    try:
        if args.command == "grad":
            return _cmd_grad(args)
        if args.command == "fill":
            return _cmd_fill(args)
        return _cmd_demo(args)
    except CLIError as exc:
        _error(str(exc))
        return exc.status
    except MemoryError:
        _error("out of memory")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (e.g. `sfer | head`); silence the flush at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
