"""The peer table's arithmetic, apart from any router (benchmarks/peers.py uses it; tests/test_peers_harness.py pins it).

* tie order: which (prompt, model order) groups to write into LLMRouter's routing file so that its label rule
  (the first row of a query holding the best performance, pandas' ``idxmax``) reads the asked order of ties;
* the two-model curve: RouteLLM's quality-gap metrics (PGR, APGR, CPT) from a router's "needs the strong
  model" signal, and the threshold calibrated on training prompts;
* paired bootstrap intervals on every mean and on every difference against a reference router;
* inner cross-validation splits and the grid search over them;
* the peer table in Markdown, from the JSON alone.

Only numpy: nothing here knows a router.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

TIE_ORDERS = ("file", "shuffled", "all-winners")
TOL = 1e-9


# -- tie order ---------------------------------------------------------------------------------------

def label_groups(scores: np.ndarray, tie_order: str, *, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    """The groups of rows to write per training prompt: ``(prompt row, model columns in file order of the group)``.

    LLMRouter's label-based routers learn, per query, the model of the first row holding the query's best
    performance. ``file``: one group per prompt, columns in the data's model order (the first tied winner
    in the file becomes the label, as the harness always did). ``shuffled``: one group per prompt, its columns
    in an order drawn per prompt (a tie goes to a winner drawn uniformly). ``all-winners``: one group per tied
    winner, that winner's row first (every tied winner becomes a correct label, as RouterDC trains); prompts on
    which every model ties (nothing right, or all right) carry no label and are left out.
    """
    if tie_order not in TIE_ORDERS:
        raise ValueError(f"tie_order={tie_order!r}; expected one of {TIE_ORDERS}")
    scores = np.asarray(scores, dtype=float)
    k = scores.shape[1]
    base = np.arange(k)
    rng = np.random.default_rng(seed)
    groups: list[tuple[int, np.ndarray]] = []
    for i, row in enumerate(scores):
        if tie_order == "file":
            groups.append((i, base))
        elif tie_order == "shuffled":
            groups.append((i, rng.permutation(k)))
        else:
            winners = np.flatnonzero(row >= row.max() - TOL)
            if len(winners) == k:
                continue
            for w in winners:
                groups.append((i, np.concatenate([[w], base[base != w]])))
    return groups


def first_best(row: np.ndarray, order: Sequence[int]) -> int:
    """The label LLMRouter reads from one group: the first column (in ``order``) holding the row's maximum."""
    row = np.asarray(row, dtype=float)
    return int(next(c for c in order if row[c] >= row.max() - TOL))


# -- the two-model curve (RouteLLM's metrics) -------------------------------------------------------

def strong_order(signal: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Prompts in the order a rising share of strong-model calls takes them: highest signal first, ties at random."""
    signal = np.asarray(signal, dtype=float)
    tiebreak = np.random.default_rng(seed).permutation(len(signal))
    return np.lexsort((tiebreak, -signal))


def pair_curve(signal: np.ndarray, weak: np.ndarray, strong: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Mean score when the ``m`` prompts of highest signal go to the strong model, for m = 0..n (length n+1)."""
    weak, strong = np.asarray(weak, dtype=float), np.asarray(strong, dtype=float)
    gain = (strong - weak)[strong_order(signal, seed=seed)]
    return (weak.sum() + np.concatenate([[0.0], np.cumsum(gain)])) / len(weak)


def pgr(curve: np.ndarray) -> np.ndarray:
    """Performance gap recovered along the curve: (score - all weak) / (all strong - all weak)."""
    gap = curve[-1] - curve[0]
    if abs(gap) < TOL:
        raise ValueError("the strong and weak models score the same on these prompts: no quality gap to recover")
    return (curve - curve[0]) / gap


def apgr(curve: np.ndarray) -> float:
    """Average PGR over the strong-call share from 0 to 1 (RouteLLM's APGR: the area under PGR vs. share)."""
    p = pgr(curve)
    return float(np.mean((p[1:] + p[:-1]) / 2))


def cpt(curve: np.ndarray, target: float) -> float | None:
    """RouteLLM's call-performance threshold: the smallest share of strong calls whose PGR reaches ``target``."""
    hit = np.flatnonzero(pgr(curve) >= target - TOL)
    return None if len(hit) == 0 else float(hit[0] / (len(curve) - 1))


def calibrate_threshold(signal: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> float:
    """The threshold on ``signal`` (strong when signal >= threshold) with the best mean score on these prompts.

    Candidates are the distinct signal values and +inf (never strong); the lowest share wins a tie in score.
    """
    signal = np.asarray(signal, dtype=float)
    values = np.unique(signal)[::-1]                       # descending: strong share grows along the list
    scores = [float(np.asarray(weak).mean())]
    for t in values:
        scores.append(float(np.where(signal >= t, strong, weak).mean()))
    best = int(np.argmax(np.asarray(scores) - TOL * np.arange(len(scores))))
    return float("inf") if best == 0 else float(values[best - 1])


# -- paired bootstrap --------------------------------------------------------------------------------

def bootstrap_indices(n: int, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) prompt indices drawn with replacement; every router is scored on the same draws (paired)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def paired_bootstrap(per_prompt: dict[str, np.ndarray], reference: str, *, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """95% percentile intervals on each router's mean and on its difference from ``reference``'s, same draws."""
    if reference not in per_prompt:
        raise KeyError(f"reference {reference!r} not among {sorted(per_prompt)}")
    n = len(per_prompt[reference])
    idx = bootstrap_indices(n, n_boot=n_boot, seed=seed)
    ref = np.asarray(per_prompt[reference], dtype=float)
    ref_means = ref[idx].mean(1)
    out: dict[str, dict[str, Any]] = {}
    for name, values in per_prompt.items():
        v = np.asarray(values, dtype=float)
        if len(v) != n:
            raise ValueError(f"{name}: {len(v)} per-prompt scores; the reference has {n}")
        means = v[idx].mean(1)
        diff = means - ref_means
        out[name] = {"mean": float(v.mean()), "ci95": _interval(means),
                     f"minus_{reference}": float(v.mean() - ref.mean()),
                     f"minus_{reference}_ci95": _interval(diff),
                     "share_of_draws_above_reference": float(np.mean(diff > 0))}
    return out


def bootstrap_statistic(statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = 500,
                        seed: int = 0) -> list[float]:
    """95% percentile interval of ``statistic(indices)`` over prompt resamples (for APGR, CPT)."""
    idx = bootstrap_indices(n, n_boot=n_boot, seed=seed)
    values = [statistic(i) for i in idx]
    return _interval(np.array([np.nan if v is None else v for v in values], dtype=float))


def _interval(draws: np.ndarray) -> list[float]:
    draws = draws[~np.isnan(draws)]
    return [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))] if len(draws) else [None, None]


# -- inner cross-validation ---------------------------------------------------------------------------

def inner_splits(train_idx: np.ndarray, n_inner: int, *, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inner train, inner validation) index pairs inside one outer training fold: the test fold is never seen."""
    order = np.random.default_rng(seed).permutation(np.asarray(train_idx))
    parts = np.array_split(order, n_inner)
    for j in range(n_inner):
        yield np.sort(np.concatenate(parts[:j] + parts[j + 1:])), np.sort(parts[j])


def grid_points(grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a small grid, in a stable order."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def choose(grid: dict[str, Sequence[Any]], evaluate: Callable[[dict[str, Any]], float]) -> tuple[dict, list[dict]]:
    """The grid point of best ``evaluate`` (mean inner-validation score); the first listed wins a tie."""
    trials = [{"params": p, "inner_score": float(evaluate(p))} for p in grid_points(grid)]
    best = max(range(len(trials)), key=lambda j: (trials[j]["inner_score"], -j))
    return trials[best]["params"], trials


# -- the Markdown table --------------------------------------------------------------------------------

def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _ci(ci: Sequence[float | None] | None, digits: int = 3) -> str:
    return "" if not ci or ci[0] is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def markdown_table(result: dict[str, Any]) -> str:
    """The peer tables of benchmarks/README.md, from the JSON peers.py writes."""
    routers, ref = result["routers"], result.get("reference", "tryage")
    head = (f"| router | tie order | tuning | mean score [95% CI] | minus {ref} [95% CI] | picks a best model "
            "| price share | train s/fold |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, e in sorted(routers.items(), key=lambda kv: -kv[1]["mean_score"]):
        b = e.get("bootstrap", {})
        tuned = e.get("tuning")
        tuning = "—" if not tuned else ("inner CV: " + "; ".join(
            f"{k}={'/'.join(str(v) for v in vs)}" for k, vs in tuned["chosen_per_fold"].items()))
        diff = "" if name == ref or f"minus_{ref}" not in b else \
            f"{b[f'minus_{ref}']:+.3f}{_ci(b.get(f'minus_{ref}_ci95'))}"
        acc = e.get("select_best_accuracy")
        train = e.get("train_seconds_per_fold")
        lines.append(f"| {e.get('label', name)} | {e.get('tie_order') or '—'} | {tuning} "
                     f"| {e['mean_score']:.3f}{_ci(b.get('ci95'))} | {diff} "
                     f"| {'' if acc is None else f'{100 * acc:.1f}%'} | {_pct(e.get('price_share'))} "
                     f"| {'—' if train is None else f'{train:.0f}'} |")
    out = "\n".join(lines)
    ties = _tie_table(routers)
    if ties:
        out += "\n\n" + ties
    pair = result.get("pair")
    if pair:
        out += "\n\n" + _pair_table(pair, ref)
    untuned = {e.get("label", n): e["not_tuned"] for n, e in routers.items() if e.get("not_tuned")}
    notes = [f"Intervals: paired bootstrap over prompts ({result.get('n_boot', '?')} draws, the same draws for "
             f"every router), 95% percentile. Tuning grids (inner CV, {result.get('tuning', {}).get('inner_folds')} "
             f"inner folds inside each training fold): "
             + "; ".join(f"{k}: {v}" for k, v in result.get("tuning", {}).get("grids", {}).items()) + "."]
    by_reason: dict[str, list[str]] = {}
    for label, reason in sorted(untuned.items()):
        by_reason.setdefault(reason, []).append(label)
    notes += ["Not tuned:"] + [f"- {'; '.join(labels)}: {reason}" for reason, labels in by_reason.items()] \
        if untuned else []
    notes += ["Deviations from the peers' own setups (from the JSON):"] + \
        [f"- {d}" for d in result.get("deviations", [])]
    return out + "\n\n" + "\n".join(notes) + "\n"


def _tie_table(routers: dict[str, Any]) -> str:
    """One row per label-based peer, its mean score under each tie order side by side."""
    by_base: dict[str, dict[str, dict]] = {}
    for name, e in routers.items():
        if e.get("tie_order"):
            by_base.setdefault(name.partition("@")[0], {})[e["tie_order"]] = e
    if not any(len(v) > 1 for v in by_base.values()):
        return ""
    head = ("Label-based peers by tie order (their label is the first tied best row: the result depends on the "
            "data file's row order):")
    lines = [head, "", "| router | " + " | ".join(TIE_ORDERS) + " |", "|---|" + "---|" * len(TIE_ORDERS)]
    for base, runs in sorted(by_base.items()):
        cells = [f"{runs[t]['mean_score']:.3f}{_ci(runs[t].get('bootstrap', {}).get('ci95'))}" if t in runs
                 else "not run" for t in TIE_ORDERS]
        lines.append(f"| {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pair_table(pair: dict[str, Any], ref: str = "tryage") -> str:
    head = (f"Two-model comparison (weak {'/'.join(pair['weak'])}, strong {'/'.join(pair['strong'])}; all weak "
            f"{pair['all_weak']:.3f}, all strong {pair['all_strong']:.3f}, the pair's oracle {pair['oracle']:.3f}):")
    cols = (f"| router | mean score at calibrated threshold [95% CI] | minus {ref} [95% CI] | strong share there "
            "| APGR [95% CI] | CPT(50%) | CPT(80%) |")
    lines = [head, "", cols, "|---|---|---|---|---|---|---|"]
    for name, e in sorted(pair["routers"].items(), key=lambda kv: -(kv[1]["apgr"] or 0)):
        diff = "" if f"minus_{ref}" not in e or name == ref else \
            f"{e[f'minus_{ref}']:+.3f}{_ci(e.get(f'minus_{ref}_ci95'))}"
        lines.append(f"| {e.get('label', name)} | {e['mean_score']:.3f}{_ci(e.get('ci95'))} | {diff} "
                     f"| {_pct(e['strong_share'])} | {e['apgr']:.3f}{_ci(e.get('apgr_ci95'))} "
                     f"| {_pct(e['cpt50'])} | {_pct(e['cpt80'])} |")
    return "\n".join(lines)


def replace_between(text: str, table: str, begin: str = "<!-- peers-table:begin -->",
                    end: str = "<!-- peers-table:end -->") -> str:
    """``text`` with what lies between the two markers replaced by ``table``."""
    if begin not in text or end not in text:
        raise ValueError(f"markers {begin} ... {end} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}{end}{tail}"
