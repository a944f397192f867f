"""What-if variants of an openb pod list: more GPU sharing, more multi-GPU pods, more
model constraints, more or fewer CPU-only pods.

The FGD paper evaluates its policies on variants of the default openb trace (``gpushareXX``,
``multigpuXX``, ``gpuspecXX``, ``cpuXXX``). Four are shipped with the trace; the others were
held back. This module derives variants of any pod list by rules of our own, written to
match what the shipped variants show (``../shared/data/alibaba-openb-gpu-2023/SOURCE.md``):

- ``gpushareP``: as many rows as the source. CPU-only rows stay CPU-only; each GPU row is
  redrawn (with replacement) from the source's GPU-sharing pods or from its whole-GPU pods,
  with the number of sharing rows chosen so that, at the pools' mean requests, sharing pods
  carry P% of the requested GPU. Row names are kept. (gpushare40 redraws every row from the
  default list's own rows, and keeps the CPU-only count.)
- ``multigpuP``: multi-GPU pods (2 or more GPUs) drawn with replacement from the source's
  are appended until they carry at least P% of the requested GPU; when the source already
  has more, random multi-GPU pods are removed until at or below. (multigpu20 appends to the
  default list.)
- ``gpuspecP``: P% of the GPU pods, chosen at random, accept one GPU model only: a model
  drawn in proportion to the nodes of each model, among the models whose nodes can host the
  pod (enough GPUs, CPU and memory on one node). The shipped gpuspec10 has the source's
  rows with constraints added; its constraints name one model or several, mostly T4. Ours
  differ in that: they are a stress test of the same kind, not a copy of the held-back files.
- ``cpuT`` (T in tenths of a percent, as in the paper's names: ``cpu050`` = 5.0%): CPU-only
  pods make up T/10 % of the pods. GPU pods are kept; CPU-only pods are removed at random, or
  clones of random CPU-only pods are appended.

A variant is made once, with its own seed, before any run: every (policy, seed) run then
sees the same pod list, as with a file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from models.errors import SpecError
from models.readers.openb import NodeRow, PodRow

_NAME = re.compile(r"^(gpushare|multigpu|gpuspec|cpu)(\d{1,3})$")
SOURCE = "--variant"


def parse_variant(name: str) -> tuple[str, float]:
    """``gpushare60`` -> ("gpushare", 0.60); ``cpu050`` -> ("cpu", 0.05)."""
    m = _NAME.match(name.strip().lower())
    if m is None:
        raise SpecError(f"unknown variant {name!r}", source=SOURCE,
                        fix="write gpushareP, multigpuP or gpuspecP with P a percent (0-100), "
                            "or cpuT with T in tenths of a percent (cpu050 = 5.0%)")
    kind, digits = m.group(1), m.group(2)
    if kind == "cpu":
        if len(digits) != 3:
            raise SpecError(f"variant {name!r}: cpu takes three digits, tenths of a percent", source=SOURCE,
                            fix="write e.g. cpu050 for 5.0% or cpu250 for 25.0%")
        share = int(digits) / 1000.0
        if share >= 1.0:
            raise SpecError(f"variant {name!r}: CPU-only pods cannot be all the pods", source=SOURCE,
                            fix="use a share below 100.0% (cpu999 at most)")
        return kind, share
    pct = int(digits)
    if pct > 100:
        raise SpecError(f"variant {name!r}: {pct}% is above 100%", source=SOURCE, fix="use a percent from 0 to 100")
    return kind, pct / 100.0


def make_variant(pods: Sequence[PodRow], name: str, seed: int = 0,
                 nodes: Sequence[NodeRow] | None = None) -> list[PodRow]:
    """The pod list of variant ``name`` of ``pods`` (rules in the module docstring).

    ``nodes`` is needed by ``gpuspec`` (the models and what their nodes can host)."""
    kind, share = parse_variant(name)
    if seed < 0:
        raise SpecError(f"variant seed {seed} is negative", source="--variant-seed", fix="use a seed of 0 or more")
    rng = np.random.default_rng(seed)
    src = sorted(pods, key=lambda p: p.name)
    if kind == "gpushare":
        out = _gpushare(src, share, rng, name)
    elif kind == "multigpu":
        out = _multigpu(src, share, rng, name)
    elif kind == "gpuspec":
        if not nodes:
            raise SpecError(f"variant {name!r} needs the node list (the GPU models)", source=SOURCE)
        out = _gpuspec(src, share, rng, nodes, name)
    else:
        out = _cpu(src, share, rng, name)
    if not out:
        raise SpecError(f"variant {name!r} leaves no pods of the {len(pods)} in the list", source=SOURCE)
    return out


def _need(pool: list[PodRow], what: str, name: str) -> None:
    if not pool:
        raise SpecError(f"variant {name!r}: the pod list has no {what} to draw from", source=SOURCE)


def _fresh_names(pods: Sequence[PodRow], count: int) -> list[str]:
    taken = {p.name for p in pods}
    out, i = [], 0
    while len(out) < count:
        candidate = f"variant-pod-{i:05d}"
        if candidate not in taken:
            out.append(candidate)
        i += 1
    return out


def _gpushare(src: list[PodRow], share: float, rng: np.random.Generator, name: str) -> list[PodRow]:
    shared = [p for p in src if p.is_shared]
    whole = [p for p in src if p.num_gpu > 0 and not p.is_shared]
    gpu_rows = [i for i, p in enumerate(src) if p.num_gpu > 0]
    if share > 0:
        _need(shared, "GPU-sharing pods", name)
    if share < 1:
        _need(whole, "whole-GPU pods", name)
    ms = float(np.mean([p.gpu_milli_total for p in shared])) if shared else 0.0
    mw = float(np.mean([p.gpu_milli_total for p in whole])) if whole else 0.0
    # sharing rows q of the GPU rows: q ms / (q ms + (1 - q) mw) = share
    q = 1.0 if share >= 1 else 0.0 if share <= 0 else share * mw / (share * mw + (1 - share) * ms)
    n_shared = int(round(q * len(gpu_rows)))
    is_shared = np.zeros(len(gpu_rows), dtype=bool)
    is_shared[rng.choice(len(gpu_rows), size=n_shared, replace=False)] = True
    out = list(src)
    for row, sh in zip(gpu_rows, is_shared, strict=True):
        pool = shared if sh else whole
        out[row] = pool[int(rng.integers(len(pool)))].clone(src[row].name)
    return out


def _multigpu(src: list[PodRow], share: float, rng: np.random.Generator, name: str) -> list[PodRow]:
    multi = [p for p in src if p.num_gpu >= 2]
    _need(multi, "multi-GPU pods", name)
    total = sum(p.gpu_milli_total for p in src)
    mult = sum(p.gpu_milli_total for p in multi)
    out = list(src)
    if mult < share * total:
        if share >= 1:
            raise SpecError(f"variant {name!r}: multi-GPU pods can carry all the GPU only if there is no other GPU pod",
                            source=SOURCE, fix="use a percent below 100")
        added: list[PodRow] = []
        while mult < share * total:
            p = multi[int(rng.integers(len(multi)))]
            added.append(p)
            mult += p.gpu_milli_total
            total += p.gpu_milli_total
        out += [p.clone(n) for p, n in zip(added, _fresh_names(src, len(added)), strict=True)]
        return out
    rows = [i for i, p in enumerate(out) if p.num_gpu >= 2]
    drop: set[int] = set()
    for i in rng.permutation(rows):
        if mult <= share * total:
            break
        drop.add(int(i))
        mult -= out[i].gpu_milli_total
        total -= out[i].gpu_milli_total
    return [p for i, p in enumerate(out) if i not in drop]


def _gpuspec(src: list[PodRow], share: float, rng: np.random.Generator, nodes: Sequence[NodeRow],
             name: str) -> list[PodRow]:
    gpu_nodes = [n for n in nodes if n.gpus > 0 and n.model]
    if not gpu_nodes:
        raise SpecError(f"variant {name!r}: the node list has no GPU nodes with a model", source=SOURCE)
    models = sorted({n.model for n in gpu_nodes})
    node_model = np.array([models.index(n.model) for n in gpu_nodes])
    node_gpus = np.array([n.gpus for n in gpu_nodes])
    node_cpu = np.array([n.cpu_milli for n in gpu_nodes])
    node_mem = np.array([n.memory_mib for n in gpu_nodes])
    out = list(src)
    gpu_rows = [i for i, p in enumerate(src) if p.num_gpu > 0]
    chosen = rng.choice(len(gpu_rows), size=int(round(share * len(gpu_rows))), replace=False)
    for j in sorted(int(c) for c in chosen):
        p = src[gpu_rows[j]]
        hosts = (node_gpus >= p.num_gpu) & (node_cpu >= p.cpu_milli) & (node_mem >= p.memory_mib)
        if p.gpu_spec:
            hosts &= np.isin(node_model, [models.index(m) for m in p.gpu_spec if m in models])
        weight = np.bincount(node_model[hosts], minlength=len(models)).astype(float)
        if weight.sum() == 0:
            continue  # no node can host it: a constraint would change nothing
        model = models[int(rng.choice(len(models), p=weight / weight.sum()))]
        out[gpu_rows[j]] = replace(p, gpu_spec=(model,))
    return out


def _cpu(src: list[PodRow], share: float, rng: np.random.Generator, name: str) -> list[PodRow]:
    cpu_only = [i for i, p in enumerate(src) if p.num_gpu == 0]
    n_gpu = len(src) - len(cpu_only)
    want = int(round(share * n_gpu / (1.0 - share)))
    if want <= len(cpu_only):
        drop = {int(i) for i in rng.choice(cpu_only, size=len(cpu_only) - want, replace=False)}
        return [p for i, p in enumerate(src) if i not in drop]
    _need(cpu_only, "CPU-only pods", name)
    extra = [src[cpu_only[int(rng.integers(len(cpu_only)))]] for _ in range(want - len(cpu_only))]
    return list(src) + [p.clone(n) for p, n in zip(extra, _fresh_names(src, len(extra)), strict=True)]


def describe(pods: Sequence[PodRow]) -> dict[str, float]:
    """The measures the variants set: shares of the requested GPU and of the pods."""
    total = sum(p.gpu_milli_total for p in pods) or 1
    gpu_pods = [p for p in pods if p.num_gpu > 0]
    return {
        "pods": len(pods),
        "gpushare_pct": 100.0 * sum(p.gpu_milli_total for p in pods if p.is_shared) / total,
        "multigpu_pct": 100.0 * sum(p.gpu_milli_total for p in pods if p.num_gpu >= 2) / total,
        "gpuspec_pct": 100.0 * sum(1 for p in gpu_pods if p.gpu_spec) / max(len(gpu_pods), 1),
        "cpu_pct": 100.0 * (len(pods) - len(gpu_pods)) / max(len(pods), 1),
    }
