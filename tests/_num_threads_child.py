"""Child process for tests/test_num_threads.py (run as ``python _num_threads_child.py MODE``).

Prints one JSON object.  Each "report" holds what ``sfer.get_num_threads()`` says and the
thread counts that large calls (N + N_full = 400,000: parallel) really ran with
(``sfer._runtime._last_threads()``), with ``num_threads=None`` and with ``num_threads=5``.

MODE:
  affinity  reports at start-up, under an affinity mask of one CPU, and with the mask restored
            (the mask is changed after sfer is imported: sfer must read it on every call)
  limit     inside threadpool_limits(1, user_api="openmp") (entered before sfer is first asked),
            with the whole affinity mask and with one CPU; then after the limit
  fork      get_num_threads() in a child created by os.fork()
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

import numpy as np

import sfer
import sfer._grad
import sfer._runtime

N_FULL = 200_000
G = np.arange(N_FULL, dtype=np.float64)
RIM = np.arange(N_FULL, dtype=np.int64)  # identity map: N + N_full = 400,000 >= 65,536


def ran_with(num_threads: Optional[int]) -> int:
    res = sfer.sparse_fill_empty_rows_grad(RIM, G, num_threads=num_threads)
    assert res.d_values.tobytes() == G.tobytes() and res.d_default_value == 0.0
    return int(sfer._runtime._last_threads())


def report() -> dict[str, int]:
    return {"get": sfer.get_num_threads(), "ran": ran_with(None), "ran5": ran_with(5)}


def main(mode: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "openmp": sfer.openmp_enabled(),
        "cpu_count": os.cpu_count(),
        "omp_max": int(sfer._runtime.max_threads()),
    }
    if mode == "affinity":
        all_cpus = os.sched_getaffinity(0)
        out["n_affinity"] = len(all_cpus)
        out["start"] = report()
        os.sched_setaffinity(0, {min(all_cpus)})
        out["one"] = report()
        os.sched_setaffinity(0, all_cpus)
        out["restored"] = report()
    elif mode == "limit":
        import threadpoolctl

        all_cpus = os.sched_getaffinity(0)
        out["n_affinity"] = len(all_cpus)
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            out["limited"] = report()  # the first question sfer is asked comes under the limit
            os.sched_setaffinity(0, {min(all_cpus)})
            out["one_limited"] = report()
            os.sched_setaffinity(0, all_cpus)
        out["after"] = report()
    elif mode == "fork":
        out["parent"] = report()  # the parent has run a parallel region before it forks
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report, then leave without running any of the parent's cleanup
            try:
                os.write(w, json.dumps(report()).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            out["child"] = json.loads(f.read())
        os.waitpid(pid, 0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
