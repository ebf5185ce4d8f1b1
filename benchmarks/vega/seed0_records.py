"""Recovers the table records of the first Vega run (seed 0: freelb, smart, self_calibration, transductive).

That run's folders are gone (runs/ is not committed), but its table was: ``results.csv`` at commit
``e36295f`` holds one seed per arm (n = 1), so each ``*_mean`` column is that run's own value. This writes them as
records next to the ones ``run.py`` writes, marked with their source, so ``sstkit table benchmarks/vega/spec.yaml``
keeps those rows while later seeds add to them. The seed-0 baseline is not recovered: it was rerun (same accuracy
to the last digit, the run is deterministic on CPU) to measure the new arms' step-time ratios against.

    python benchmarks/vega/seed0_records.py    # from the repository root; skips records that exist
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "e36295f"  # the last commit whose results.csv is the first run's table alone
ARMS = ("freelb", "self_calibration", "smart", "transductive")
METRICS = ("test/acc", "test/f1", "step_time_ratio", "pseudo_labels")


def first_run_rows() -> list[dict[str, str]]:
    """The rows of results.csv as committed in ``COMMIT``."""
    text = subprocess.run(["git", "show", f"{COMMIT}:benchmarks/vega/results.csv"], check=True, cwd=HERE,
                          capture_output=True, text=True).stdout
    return list(csv.DictReader(io.StringIO(text)))


def main() -> None:
    for row in first_run_rows():
        if row["arm"] not in ARMS:
            continue
        if row["n"] != "1":  # a mean over several seeds is not one run's value
            raise SystemExit(f"error: {COMMIT}:benchmarks/vega/results.csv row {row['arm']}: expected n = 1, "
                             f"got {row['n']}")
        out = HERE / "records" / f"{row['arm']}_{row['train_samples']}" / "seed0" / "summary.json"
        if out.is_file():
            print(f"{out}: exists, skipping")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"name": f"vega_{row['arm']}", "seed": 0, "status": "finished",
                  "source": f"{COMMIT}:benchmarks/vega/results.csv (the run's folder is gone)",
                  "config": {"seed_everything": 0, "arm": row["arm"], "train_samples": int(row["train_samples"]),
                             "test_sentences": int(row["test_sentences"]),
                             "transductive": row["transductive"] == "True"},
                  "metrics": {**{key: float(row[f"{key}_mean"]) for key in METRICS},
                              "pretrain_steps": 0, "pretrain_time_ratio": 0.0}}
        out.write_text(json.dumps(record, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
