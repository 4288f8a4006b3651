"""Benchmarks: quality against the published Manhattan table, speed and memory as cities grow.

`python -m bench.run --quick|--full` runs everything and writes docs/benchmarks.md and the raw
results under docs/bench/. The modules:

- `bench.env`: what every result file carries (date, commit, device, CPU, versions, load).
- `bench.quality`: the downstream regression and clustering tables (clean and paper protocols).
- `bench.sweep`: speed and memory of SREL, prompt encoding and prediction as N grows, one fresh
  subprocess per size; self-contained (torch, numpy, scipy, scikit-learn, torch-geometric) so
  it can run on a GPU machine with `python -m bench.sweep --device cuda --out DIR`.
- `bench.prompts`: prompt-encoding throughput with and without shared-prefix reuse and warm cache.
- `bench.plots`: the log-log plots; `bench.report`: the markdown.
- `bench.writeback_qgis`: QGIS write-back timing, run with QGIS's Python.
"""
