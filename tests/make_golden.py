"""Record or check the golden corpus of sfer's results (tests/golden/grad_v1.json).

    python tests/make_golden.py            check the importable sfer against the corpus
    python tests/make_golden.py --write    record the corpus from the importable sfer

The inputs are defined in tests/golden_cases.py (how they are regenerated is described
there).  Record only from a build whose results are meant to be pinned.  Make sure the sfer
you mean is the one imported (e.g. ``PYTHONPATH=/path/to/build``); the script prints where it
came from, and the corpus keeps the git commit of the checkout it came from and the sha256 of
its kernel source (sfer/_grad.pyx; sfer/_core.pyx before the package was split).  Without --write, the differences are listed one per line.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import golden_cases as gc  # noqa: E402


def _provenance(sfer) -> dict:
    """Where the recorded build came from: the git commit of the checkout holding the imported
    sfer package (flagged when its sfer/ or setup.py differ from it) and the sha256 of the
    kernel source next to it."""
    pkg = Path(sfer.__file__).resolve().parent
    info = {"git": None, "core_pyx_sha256": None}
    pyx = pkg / "_grad.pyx" if (pkg / "_grad.pyx").is_file() else pkg / "_core.pyx"
    if pyx.is_file():
        info["core_pyx_sha256"] = hashlib.sha256(pyx.read_bytes()).hexdigest()
    try:
        head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--", ".",
                                "../setup.py"], capture_output=True, text=True,
                               check=True).stdout.strip()
        info["git"] = head + (" (sfer/ or setup.py modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def record(sfer) -> dict:
    inputs = {}
    for spec in gc.INPUTS:
        if spec.dtype == "bfloat16" and gc.BFLOAT16 is None:
            raise SystemExit("recording needs ml_dtypes (bfloat16 cases)")
        inputs[spec.id] = gc.compute(spec, sfer)
    return {
        "format": gc.FORMAT,
        "about": (
            "Bits of sfer.sparse_fill_empty_rows_grad for seeded inputs. Inputs: "
            "tests/golden_cases.py (seed = first 8 bytes LE of sha256('" + gc.SEED_PREFIX
            + "' + input id), bits from np.random.PCG64(seed).random_raw only). "
            "in_sha256: sha256 of the generated inputs; d_values_sha256: sha256 of "
            "d_values' little-endian bytes; d_default_value: its little-endian bytes in hex "
            "(complex: real then imaginary part). path/threads_used: sfer._grad._last_path() "
            "and sfer._runtime._last_threads() (sfer._core's before the split) after the run (path null when N_full = 0). Run keys: "
            "t<num_threads>[|out]. Written by: python tests/make_golden.py --write."
        ),
        "recorded_with": {
            "sfer": getattr(sfer, "__version__", None),
            **_provenance(sfer),
            "openmp": bool(sfer.openmp_enabled()),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "date": datetime.date.today().isoformat(),
        },
        "inputs": inputs,
    }


def dumps(corpus: dict) -> str:
    """JSON with one line per input (small, and diffs show which inputs changed)."""
    head = {k: v for k, v in corpus.items() if k != "inputs"}
    lines = json.dumps(head, indent=1)[:-2] + ',\n "inputs": {\n'
    items = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
             for k, v in corpus["inputs"].items()]
    text = lines + ",\n".join(items) + "\n }\n}\n"
    if json.loads(text) != corpus:
        raise AssertionError("dumps() lost information")
    return text


def compare(recorded: dict, current: dict) -> list[str]:
    """Differences between two corpora, one line each (ignores recorded_with)."""
    problems = []
    rin, cin = recorded["inputs"], current["inputs"]
    for key in sorted(set(rin) ^ set(cin)):
        problems.append(f"{key}: only in {'the recorded' if key in rin else 'the current'} corpus")
    for key in [k for k in cin if k in rin]:
        r, c = rin[key], cin[key]
        if r["in_sha256"] != c["in_sha256"]:
            problems.append(f"{key}: the regenerated INPUT differs (generation drift)")
            continue
        for run in sorted(set(r["runs"]) | set(c["runs"])):
            if r["runs"].get(run) != c["runs"].get(run):
                problems.append(f"{key}|{run}: recorded {r['runs'].get(run)} "
                                f"now {c['runs'].get(run)}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="record the corpus (overwrites it)")
    ap.add_argument("--output", type=Path, default=gc.CORPUS, help="corpus path")
    args = ap.parse_args(argv)

    import sfer

    print(f"sfer {getattr(sfer, '__version__', '?')} from {sfer.__file__} "
          f"(openmp_enabled={sfer.openmp_enabled()}); numpy {np.__version__}")
    t0 = time.perf_counter()
    current = record(sfer)
    took = time.perf_counter() - t0
    runs = sum(len(v["runs"]) for v in current["inputs"].values())
    paths = sorted({str(r["path"]) for v in current["inputs"].values()
                    for r in v["runs"].values()})
    print(f"{len(current['inputs'])} inputs, {runs} runs in {took:.1f} s; paths: {paths}")
    if args.write:
        missing = set(gc.PATHS) - set(paths)
        if missing:
            raise SystemExit(f"the corpus would not cover the paths {sorted(missing)}")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        text = dumps(current)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output} ({len(text.encode()) / 1024:.0f} KiB)")
        return 0
    problems = compare(gc.load_corpus(args.output), current)
    for line in problems:
        print(line)
    print("OK: the corpus matches" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
