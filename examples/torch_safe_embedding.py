"""``tf.nn.safe_embedding_lookup_sparse`` in PyTorch, with sfer's differentiable fill.

The layer, for a batch of variable-length id lists (a 2-D sparse tensor of ids, TensorFlow's
``[N, 2]`` indices of ``(row, position)``) and optional per-id weights:

1. prunes the entries with an id < 0 (and, with weights and a combiner other than ``sum``,
   those with a weight <= 0, as TensorFlow does);
2. fills each empty row with one entry: ``default_id`` (or 0), weight 1
   (:func:`sfer.torch.sparse_fill_empty_rows`: exactly ``SparseFillEmptyRows``, whose gradient
   is ``SparseFillEmptyRowsGrad``, as in TensorFlow);
3. gathers the rows of the embedding table;
4. combines each row's embeddings with ``sum``, ``mean`` (divided by the sum of the weights)
   or ``sqrtn`` (divided by the square root of the sum of the squared weights);
5. without a ``default_id``, returns zeros for the rows that were empty.

Run it:

    python examples/torch_safe_embedding.py
        the layer on random data, its outputs and gradients
    python examples/torch_safe_embedding.py --tf-python /path/to/tf-venv/bin/python
        also runs tf.nn.safe_embedding_lookup_sparse (in that interpreter, another process:
        TensorFlow is needed only there) on the same data, for every combiner, with and
        without weights and default_id, in float32 and float64, and compares the outputs and
        the gradients with respect to the table and the weights

Needs torch (and sfer); TensorFlow only for the comparison.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

COMBINERS = ("sum", "mean", "sqrtn")


def safe_embedding_lookup_sparse(table, indices, ids, dense_shape, weights=None,
                                 combiner="mean", default_id=None):
    """The layer (torch tensors in, a ``[dense_shape[0], dim]`` tensor out)."""
    import torch

    import sfer.torch

    keep = ids >= 0
    if weights is not None and combiner != "sum":
        keep = keep & (weights > 0)
    indices, ids = indices[keep], ids[keep]
    fill = sfer.torch.sparse_fill_empty_rows(indices, ids, dense_shape,
                                             0 if default_id is None else default_id)
    rows, batch = fill.output_indices[:, 0], dense_shape[0]
    emb = table[fill.output_values]
    if weights is None:
        w = torch.ones(len(rows), dtype=table.dtype)
    else:
        w = sfer.torch.sparse_fill_empty_rows(indices, weights[keep], dense_shape,
                                              1.0).output_values
        emb = emb * w[:, None]
    out = torch.zeros(batch, table.shape[1], dtype=table.dtype).index_add(0, rows, emb)
    if combiner == "mean":
        out = out / torch.zeros(batch, dtype=w.dtype).index_add(0, rows, w)[:, None]
    elif combiner == "sqrtn":
        out = out / torch.zeros(batch, dtype=w.dtype).index_add(0, rows, w * w).sqrt()[:, None]
    if default_id is None:
        out = torch.where(fill.empty_row_indicator[:, None], torch.zeros_like(out), out)
    return out


def make_data(seed=0, batch=64, vocab=50, dim=8, n=300, dtype="float32"):
    """Random id lists: duplicates, ids < 0 to prune, rows left empty, weights <= 0."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.integers(0, batch - 8, n))   # the last 8 rows are empty
    cols = np.concatenate([np.arange(c) for c in np.bincount(rows, minlength=batch)])
    data = {
        "indices": np.stack([rows, cols], axis=1).astype(np.int64),
        "ids": rng.integers(-5, vocab, n).astype(np.int64),
        "weights": rng.uniform(-0.2, 2.0, n).astype(dtype),
        "table": rng.normal(size=(vocab, dim)).astype(dtype),
        "dense_shape": np.array([batch, int(cols.max()) + 1], np.int64),
    }
    data["cotangent"] = rng.normal(size=(batch, dim)).astype(dtype)
    return data


def cases():
    return list(itertools.product(COMBINERS, (False, True), (None, 3)))


def run_torch(data):
    """Outputs and gradients (table, weights) of the layer for every case."""
    import torch

    results = {}
    for combiner, weighted, default_id in cases():
        table = torch.tensor(data["table"], requires_grad=True)
        weights = torch.tensor(data["weights"], requires_grad=True) if weighted else None
        out = safe_embedding_lookup_sparse(
            table, torch.tensor(data["indices"]), torch.tensor(data["ids"]),
            [int(x) for x in data["dense_shape"]], weights, combiner, default_id)
        (out * torch.tensor(data["cotangent"])).sum().backward()
        key = f"{combiner}-{'w' if weighted else 'nw'}-{default_id}"
        results[key + "-out"] = out.detach().numpy()
        results[key + "-dtable"] = table.grad.numpy()
        if weighted:
            results[key + "-dweights"] = weights.grad.numpy()
    return results


def run_tensorflow(data):
    """The same with tf.nn.safe_embedding_lookup_sparse (run in the TensorFlow process)."""
    import tensorflow as tf

    results = {}
    shape = data["dense_shape"]
    for combiner, weighted, default_id in cases():
        table = tf.Variable(data["table"])
        weights = tf.Variable(data["weights"])
        with tf.GradientTape() as tape:
            sp_ids = tf.sparse.SparseTensor(data["indices"], data["ids"], shape)
            sp_w = tf.sparse.SparseTensor(data["indices"], weights, shape) if weighted else None
            out = tf.nn.safe_embedding_lookup_sparse(table, sp_ids, sp_w, combiner=combiner,
                                                     default_id=default_id)
            loss = tf.reduce_sum(out * data["cotangent"])
        d_table, d_weights = tape.gradient(loss, [table, weights])
        key = f"{combiner}-{'w' if weighted else 'nw'}-{default_id}"
        results[key + "-out"] = out.numpy()
        results[key + "-dtable"] = tf.convert_to_tensor(d_table).numpy()
        if weighted:
            results[key + "-dweights"] = tf.convert_to_tensor(d_weights).numpy()
    return results


def compare(tf_python):
    """Run both on the same data, float32 and float64; print the largest differences."""
    worst, exact, total = {}, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float64"):
            data = make_data(dtype=dtype)
            np.savez(Path(tmp) / "in.npz", **data)
            subprocess.run([tf_python, __file__, "--tf-worker", tmp], check=True,
                           stderr=subprocess.DEVNULL)
            theirs = dict(np.load(Path(tmp) / "out.npz"))
            ours = run_torch(data)
            assert ours.keys() == theirs.keys(), (ours.keys(), theirs.keys())
            for key, value in ours.items():
                diff = np.abs(value - theirs[key])
                exact += int(np.array_equal(value, theirs[key]))
                total += 1
                rel = float(diff.max() / max(np.abs(theirs[key]).max(), 1e-30))
                kind = key.rsplit("-", 1)[1]
                worst[dtype, kind] = max(worst.get((dtype, kind), 0.0), rel)
                if dtype == "float64":
                    assert rel < 1e-12, (key, rel)
                else:
                    assert rel < 1e-5, (key, rel)
    print(f"{len(cases())} cases (combiner x weights x default_id) against "
          "tf.nn.safe_embedding_lookup_sparse; largest difference relative to the largest "
          "magnitude:")
    for (dtype, kind), rel in sorted(worst.items()):
        print(f"  {dtype:8s} {kind:9s} {rel:.3g}")
    print(f"bit-for-bit equal: {exact} of {total} arrays (the rest differ by rounding: "
          "TensorFlow's segment sums add in another order than torch's index_add)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tf-python", help="a Python with TensorFlow: compare with it")
    parser.add_argument("--tf-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tf_worker:   # in the TensorFlow process
        data = dict(np.load(Path(args.tf_worker) / "in.npz"))
        np.savez(Path(args.tf_worker) / "out.npz", **run_tensorflow(data))
        return
    data = make_data()
    results = run_torch(data)
    out = results["mean-w-None-out"]
    print(f"mean of weighted embeddings: {out.shape}, rows 0-1:\n{out[:2].round(4)}")
    print("empty rows give zeros:", bool((out[-8:] == 0).all()))
    print("d table:", results["mean-w-None-dtable"].shape,
          "d weights:", results["mean-w-None-dweights"].shape)
    if args.tf_python:
        compare(args.tf_python)


if __name__ == "__main__":
    sys.exit(main())
