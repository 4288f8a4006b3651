"""Prints the demo's metric table beside the published Manhattan numbers.

Usage: python scripts/demo_table.py METRICS_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PUBLISHED = Path(__file__).resolve().parents[1] / "resources" / "demo" / "published.json"


def main(path: str) -> int:
    metrics = json.loads(Path(path).read_text())
    published = json.loads(PUBLISHED.read_text())
    label = "paper protocol (OPTIMISTIC)" if metrics.get("optimistic") else "clean protocol"
    print(f"\nManhattan, {metrics.get('folds')} folds, {label}; MAE / RMSE / R2\n")
    tasks = list(metrics.get("tasks", {}))
    width = 64
    header = f"{'method':<{width}}" + "".join(f"{t:>28}" for t in tasks)
    print(header)
    print("-" * len(header))
    methods: list[str] = []
    for task in tasks:
        for method in metrics["tasks"][task]["methods"]:
            if method not in methods:
                methods.append(method)
    for method in methods:
        row = f"{method + ' (this run)':<{width}}"
        for task in tasks:
            s = metrics["tasks"][task]["methods"].get(method)
            row += f"{s['MAE']:>10.1f} {s['RMSE']:>8.1f} {s['R2']:>7.3f}  " if s else f"{'':>28}"
        print(row)
    for method, scores in published["methods"].items():
        row = f"{method + ' (published)':<{width}}"
        for task in tasks:
            s = scores.get(task)
            row += f"{s[0]:>10.1f} {s[1]:>8.1f} {s[2]:>7.3f}  " if s else f"{'':>28}"
        print(row)
    paired = {t: metrics["tasks"][t].get("versus_bar") for t in tasks}
    if any(paired.values()):
        print("\nthe default minus the bar in this run, paired over the same regions "
              "(95% bootstrap interval; an interval across 0: not told apart here):")
        for task, versus in paired.items():
            if versus:
                print(f"  {task:<14} {versus['difference']:+.3f}  [{versus['low']:+.3f}, "
                      f"{versus['high']:+.3f}]  lower error on {versus['folds_better']} of "
                      f"{versus['folds']} folds")
    for field, scores in metrics.get("clustering", {}).items():
        k = scores.get("CLUSTERS", scores.get("CLASSES"))
        print(f"\nclustering of the embeddings against {field}: KMeans({k}), NMI "
              f"{scores['NMI']:.3f}, ARI {scores['ARI']:.3f}  (published, with KMeans(12): "
              "MGFN 0.76 / 0.58, MVURE 0.78 / 0.62)")
    print(f"\nsource of the published rows: {published['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
