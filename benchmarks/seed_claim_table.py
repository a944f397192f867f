"""Side-by-side start-up wait and GPU utilisation from ``toposched simulate workload`` runs (docs/seed-claim.md).

    for s in 1 2 3; do
      toposched simulate workload --cluster superpod-4su --workload examples/workload-superpod.yaml \\
          --hours 24 --warmup 4 --policy all --seed $s --out out/seed-claim/seed$s
    done
    python benchmarks/seed_claim_table.py out/seed-claim/seed1 out/seed-claim/seed2 out/seed-claim/seed3

Prints one Markdown table per seed and one with the means over the seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("start-up wait, mean (started jobs)", "start-up wait, mean (all jobs, unstarted counted to the end)",
           "start-up wait, mean (multi-pod jobs)", "not started", "GPU utilisation", "GPU allocation")


def row(p: dict) -> list[float]:
    return [p["startup_wait_s"]["mean"], p["startup_wait_censored_mean_s"], p["startup_wait_distributed_s"]["mean"],
            p["jobs_never_started"] / max(p["jobs_arrived"], 1), p["gpu_utilisation"], p["gpu_allocation"]]


def fmt(values: list[float]) -> list[str]:
    w, c, d, ns, u, a = values
    return [f"{w:.0f} s", f"{c:.0f} s", f"{d:.0f} s", f"{100 * ns:.1f}%", f"{100 * u:.1f}%", f"{100 * a:.1f}%"]


def table(rows: dict[str, list[float]]) -> str:
    lines = ["| policy | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(v)) + " |" for name, v in rows.items()]
    return "\n".join(lines)


def main(folders: list[str]) -> int:
    if not folders or any(f in ("-h", "--help") for f in folders):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if folders else 2
    runs = []
    for f in folders:
        path = Path(f) / "summary.json"
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read a `toposched simulate workload` summary: {exc}", file=sys.stderr)
            return 2
    sums: dict[str, list[list[float]]] = {}
    for doc in runs:
        print(f"seed {doc['seed']}: `{doc['command']}`\n")
        rows = {name: row(p) for name, p in doc["policies"].items()}
        print(table(rows) + "\n")
        for name, v in rows.items():
            sums.setdefault(name, []).append(v)
    if len(runs) > 1:
        print(f"mean over seeds {', '.join(str(d['seed']) for d in runs)}:\n")
        print(table({name: [sum(c) / len(c) for c in zip(*vs, strict=True)] for name, vs in sums.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
