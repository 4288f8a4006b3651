"""Prompt-encoding throughput: regions per second with and without shared-prefix reuse, and
with a warm on-disk cache.

Three timings on the same regions and task prompt, the model loaded once beforehand:
- reuse: the task template's key/value cache computed once and shared (the engine's default);
- no reuse: the whole [template + region] sequence run for every region;
- warm cache: `encode_regions` a second time over the same cache folder (every vector is read
  from disk, none computed).
The first two are compared for agreement (largest absolute difference of the vectors).

For a causal model, `lengths` then shows where the time goes: the same regions with their texts
cut to a fixed number of tokens, after the full task prompt and after a short one (the
template's first paragraph), timed on the CPU clock of this process (regions per second an
idle machine would give with all its threads), so that the text length a throughput goal needs
can be read off a measurement rather than guessed.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from engine.data.dataset import RegionDataset


def prompt_throughput(dataset: RegionDataset, target: str, *, model: str = "smollm2",
                      device: str = "cpu", regions: int | None = None,
                      no_reuse_regions: int | None = None, batch_size: int = 16) -> dict:
    """Regions per second of prompt encoding, three ways (see the module's docstring).

    Args:
        dataset: the regions to describe and encode.
        target: the task (picks the template).
        model: the language model ("smollm2", "minilm", an id or folder).
        regions: encode only the first this many regions (None: all).
        no_reuse_regions: regions for the slower no-reuse timing (None: the same as `regions`).
    """
    from engine.language.describe import describe_regions
    from engine.language.encode import encode_regions
    from engine.language.models import load_language_model
    from engine.language.templates import task_template

    texts = describe_regions(dataset)[:regions]
    prefix = task_template(target)
    start = time.perf_counter()
    language_model = load_language_model(model, device=device)
    load_seconds = time.perf_counter() - start
    out: dict = {"model": model, "kind": language_model.kind, "device": device,
                 "dtype": language_model.fingerprint.rsplit("|", 1)[-1],
                 "hidden_size": language_model.hidden_size, "load_seconds": load_seconds,
                 "prompt_characters": len(prefix), "regions": len(texts),
                 "mean_text_characters": float(np.mean([len(t) for t in texts]))}

    # One untimed batch first: the first forward pass also pays for one-off kernel set-up, which
    # would otherwise be charged to whichever way is timed first.
    language_model.encode(texts[:batch_size], prefix, batch_size=batch_size, reuse_prefix=True)
    out["warm_up"] = f"one untimed batch of {min(batch_size, len(texts))} regions before timing"

    start = time.perf_counter()
    reused = language_model.encode(texts, prefix, batch_size=batch_size, reuse_prefix=True)
    seconds = time.perf_counter() - start
    out["reuse"] = {"seconds": seconds, "regions_per_second": len(texts) / seconds}

    if language_model.kind == "causal":
        subset = texts[: no_reuse_regions or len(texts)]
        start = time.perf_counter()
        full = language_model.encode(subset, prefix, batch_size=batch_size, reuse_prefix=False)
        seconds = time.perf_counter() - start
        out["no_reuse"] = {"seconds": seconds, "regions": len(subset),
                           "regions_per_second": len(subset) / seconds,
                           "max_abs_difference": float(np.abs(full - reused[: len(subset)]).max())}
    else:
        out["no_reuse"] = {"skipped": f"a {language_model.kind} model has no prefix to reuse "
                           "(bidirectional attention: every region runs the full prompt)"}

    subset_dataset = _first_regions(dataset, len(texts))
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        cold = encode_regions(subset_dataset, target, model=language_model, cache_dir=cache,
                              batch_size=batch_size)
        cold_seconds = time.perf_counter() - start
        start = time.perf_counter()
        warm = encode_regions(subset_dataset, target, model=language_model, cache_dir=cache,
                              batch_size=batch_size)
        warm_seconds = time.perf_counter() - start
    out["cold_cache"] = {"seconds": cold_seconds, "regions_per_second": len(texts) / cold_seconds,
                         "note": "describe + encode + write every vector"}
    out["warm_cache"] = {"seconds": warm_seconds, "regions_per_second": len(texts) / warm_seconds,
                         "identical": bool(np.array_equal(cold, warm)),
                         "note": "describe + read every vector from disk"}
    if language_model.kind == "causal":
        out["lengths"] = text_length_sweep(language_model, texts, prefix, batch_size=batch_size)
    return out


def text_length_sweep(language_model, texts: list[str], prefix: str, *,
                      lengths: tuple[int, ...] = (32, 64, 128), batch_size: int = 16) -> dict:
    """Regions per second with the region texts cut to each of `lengths` tokens, after the full
    task prompt and after its first paragraph; CPU-clock estimates (see the module docstring)."""
    import torch

    tokenizer = language_model.tokenizer
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    short_prefix = prefix.split("\n\n")[0] + "\n\nRegion:\n"
    threads = torch.get_num_threads()
    rows = []
    for name, head in (("full", prefix), ("short", short_prefix)):
        for length in lengths:
            cut = [tokenizer.decode(row[:length]) for row in ids]
            cpu = time.process_time()
            language_model.encode(cut, head, batch_size=batch_size)
            cpu_seconds = time.process_time() - cpu
            tokens = float(np.mean([len(r) for r in tokenizer(cut, add_special_tokens=False)[
                "input_ids"]]))
            rows.append({"prompt": name, "prompt_tokens": len(language_model.prefix_ids(head)),
                         "text_tokens": tokens, "cpu_seconds": cpu_seconds,
                         "regions_per_second": len(cut) * threads / cpu_seconds})
    return {"text_tokens_mean": float(np.mean([len(r) for r in ids])), "threads": threads,
            "regions": len(texts), "rows": rows}


def _first_regions(dataset: RegionDataset, n: int) -> RegionDataset:
    """The dataset itself when n covers it; else its first n regions (views sliced, flows cut)."""
    if n >= dataset.n_regions:
        return dataset
    import dataclasses

    import scipy.sparse as sp

    from engine.data.dataset import View

    views = {}
    for name, view in dataset.views.items():
        matrix = view.matrix[:n]
        columns = view.columns
        if view.kind == "flow":
            matrix = sp.csr_matrix(matrix)[:, :n]
            columns = view.columns[:n]
        views[name] = View(view.name, view.kind, matrix, columns)
    priors = dataset.priors
    cut = dataclasses.replace(
        priors,
        centroids=None if priors.centroids is None else priors.centroids[:n],
        area=None if priors.area is None else priors.area[:n],
        degree=priors.degree[:n], mobility_out=priors.mobility_out[:n],
        mobility_in=priors.mobility_in[:n])
    return dataclasses.replace(
        dataset, region_ids=dataset.region_ids[:n], views=views, priors=cut,
        targets={k: v[:n] for k, v in dataset.targets.items()}, classes={},
        names=None if dataset.names is None else dataset.names[:n], geometry=None)
