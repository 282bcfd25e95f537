"""A finished (or running) study as a report: the results table in the published form, the best trial,
edge-of-range warnings, figures and report.md, optionally logged to the study's MLflow parent run.

Everything is read from the Optuna study (the runner's data contract: the "hpstudy" study attr and the
trials' params, values, intermediate values and user attrs), so a report can be rebuilt from the storage
alone, on a machine without Ray or torch.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpstudy.pyplot import pyplot
from hpstudy.studies.definition import STUDY_ATTR as ATTR, superseded

EMPTY = "—"
LEGEND_CAP = 20
LABEL_ABBREVIATIONS = {"batch_size": "bs"}  # figure labels only; tables keep the TrainConfig names
# A trial with one of these statuses has no trained result, even if Optuna stored a value.
UNTRAINED = frozenset({"pruned", "diverged", "stalled", "failed"})
STATE_STATUS = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
                TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
FIGURES = {"curves.png": "Learning curves", "best_confusion.png": "Confusion matrix of the best trial (test set)",
           "importances.png": "Parameter importances", "progress.png": "Search efficiency"}


# ---------------------------------------------------------------- public API
def trials_frame(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial, in trial-number order.

    Keys: ``number``, ``state`` (Optuna's state name), ``status`` (the runner's word, or one derived from
    the state), ``reason``, one key per searched parameter, ``value`` (best val_acc over epochs, None
    unless COMPLETE), ``test_acc`` (None when missing) and ``epochs_run``.
    """
    return [_row(t) for t in _trials(study)]


def results_table(study: optuna.Study) -> str:
    """The results as a Markdown table with a note on what the numbers are.

    With the study attr ``table = [row_param, col_param]``: a grid of cells, each the best-over-epochs
    validation accuracy in percent (mean ± population std when several finished trials share the cell,
    the status word when none finished, ``—`` when none ran). Without: one row per configuration (all
    params but ``seed``), best first.
    """
    return _results_table(_trials(study), _meta(study))


def comparison_table(studies: list[optuna.Study], row_param: str) -> str:
    """Several studies side by side (e.g. optimizer x model from the three optimizer studies): rows are
    the values of ``row_param``, one column per study, labelled with its model (or its name), cells as in
    results_table (best validation accuracy, mean ± std over seeds, or the status word)."""
    columns = []
    for study in studies:
        meta = _meta(study)
        trials = [t for t in _table_trials(_trials(study)) if row_param in t.params]
        if not trials:
            raise ValueError(f"study {study.study_name!r} did not search {row_param!r}")
        columns.append((_study_label(meta), meta["metric"], trials))
    values = sorted({t.params[row_param] for _, _, trials in columns for t in trials}, key=_sort_key)
    rows = [[_fmt_param(v)] + [_cell([t for t in trials if t.params[row_param] == v], metric)
                               for _, metric, trials in columns] for v in values]
    body = _md_table([f"{row_param} \\ study"] + [label for label, _, _ in columns], rows)
    return f"{body}\n\nValues: {_value_words(_meta(studies[0]))}."


def _study_label(meta: dict[str, Any]) -> str:
    from hpstudy.studies.builtin import STUDIES  # data only: no torch or ray

    definition = STUDIES.get(meta.get("definition", ""))
    if definition and "model" in definition.base:
        return f"{definition.base['model']} ({definition.base.get('dataset', '?')})"
    return meta["name"]


def best_trial_summary(study: optuna.Study) -> str:
    """A short block naming the best finished trial: number, value, params and test accuracy."""
    trials, meta = _trials(study), _meta(study)
    return _best_summary(trials, meta)


def edge_warnings(study: optuna.Study) -> list[str]:
    """Warnings for each numeric parameter of the best finished trial that sits at the minimum or maximum
    of the values searched (with at least 3 distinct values): the optimum may lie outside the range.

    A parameter counts as numeric by its values (grid studies search numbers as categorical choices);
    string-valued parameters and ``seed`` never warn.
    """
    trials, meta = _trials(study), _meta(study)
    return _edge_warnings(trials, _best(trials, meta["direction"]))


def write_report(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write ``report.md`` and the figures (curves, best_confusion, importances, progress) into
    ``out_dir``; a figure that cannot be drawn is left out with a line in the report saying why.
    Returns the paths written, report.md first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials, meta = _trials(study), _meta(study)
    best = _best(trials, meta["direction"])
    draw: dict[str, Callable[[Path], str | None]] = {
        "curves.png": lambda p: _plot_curves(trials, meta, p),
        "best_confusion.png": lambda p: _plot_confusion(best, meta, p),
        "importances.png": lambda p: _plot_importances(study, trials, p),
        "progress.png": lambda p: _plot_progress(trials, meta, p),
    }
    skipped = {name: why for name, fn in draw.items() if (why := fn(out_dir / name)) is not None}
    figures = [out_dir / name for name in draw if name not in skipped]
    report = out_dir / "report.md"
    report.write_text(_report_markdown(study, trials, meta, best, skipped))
    return [report, *figures]


def log_report_to_mlflow(study: optuna.Study, files: list[Path]) -> bool:
    """Log ``files`` as artifacts under ``report/`` of the study's MLflow parent run (from the study attr).
    Returns False, logging nothing, when the study has no MLflow info. Never starts a run."""
    info = _meta(study).get("mlflow") or {}
    if not (info.get("tracking_uri") and info.get("parent_run_id")):
        return False
    from mlflow import MlflowClient  # imported here: mlflow is slow to import and only this needs it

    client = MlflowClient(info["tracking_uri"])
    for path in files:
        client.log_artifact(info["parent_run_id"], str(path), "report")
    return True


# ---------------------------------------------------------------- reading the study
def _trials(study: optuna.Study) -> list[FrozenTrial]:
    return sorted(study.trials, key=lambda t: t.number)


def _meta(study: optuna.Study) -> dict[str, Any]:
    """The "hpstudy" study attr with defaults, so a study made by hand still gets a report."""
    meta = dict(study.user_attrs.get(ATTR) or {})
    meta.setdefault("definition", study.study_name)
    meta.setdefault("metric", "val_acc")
    if not meta.get("direction"):
        meta["direction"] = "minimize" if study.direction == optuna.study.StudyDirection.MINIMIZE else "maximize"
    meta.setdefault("settings", {})
    meta["name"] = study.study_name
    return meta


def _status(t: FrozenTrial) -> str:
    return t.user_attrs.get("status") or STATE_STATUS.get(t.state, t.state.name.lower())


def _finished(t: FrozenTrial) -> bool:
    """A trained result: COMPLETE with a value, and not marked diverged/stalled by the engine."""
    return t.state == TrialState.COMPLETE and t.value is not None and _status(t) not in UNTRAINED


def _history(t: FrozenTrial) -> list[dict[str, Any]]:
    return t.user_attrs.get("history") or []


def _epochs_run(t: FrozenTrial) -> int:
    return len(_history(t)) or len(t.intermediate_values)


def _test(t: FrozenTrial) -> dict[str, Any]:
    return t.user_attrs.get("test") or {}


def _test_acc(t: FrozenTrial) -> float | None:
    return _test(t).get("test_acc")


def _best(trials: list[FrozenTrial], direction: str) -> FrozenTrial | None:
    finished = [t for t in trials if _finished(t)]
    if not finished:
        return None
    sign = -1 if direction == "maximize" else 1
    return min(finished, key=lambda t: (sign * t.value, t.number))  # ties: the earlier trial


def _row(t: FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "state": t.state.name, "status": _status(t),
            "reason": t.user_attrs.get("reason") or "", **t.params, "value": t.value, "test_acc": _test_acc(t),
            "epochs_run": _epochs_run(t)}


# ---------------------------------------------------------------- formatting
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sort_key(v: Any) -> tuple:
    return (0, v, "") if _is_number(v) else (1, 0, str(v))  # numbers in order, then the rest by name


def _fmt_param(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)  # sampled floats: 4 significant digits


def _fmt_params(params: dict[str, Any], abbreviate: bool = False) -> str:
    names = LABEL_ABBREVIATIONS if abbreviate else {}
    return " ".join(f"{names.get(k, k)}={_fmt_param(v)}" for k, v in params.items())


def _is_accuracy(metric: str) -> bool:
    return metric.endswith("acc")


def _fmt_value(x: float | None, metric: str = "val_acc") -> str:
    if x is None:
        return EMPTY
    return f"{100 * x:.2f}" if _is_accuracy(metric) else f"{x:.4g}"


def _mean_std(values: list[float], metric: str = "val_acc") -> str:
    if len(values) == 1:
        return _fmt_value(values[0], metric)
    return f"{_fmt_value(statistics.fmean(values), metric)} ± {_fmt_value(statistics.pstdev(values), metric)}"


def _value_words(meta: dict[str, Any]) -> str:
    if meta["metric"] == "val_acc":
        return "best validation accuracy over epochs, %"
    return f"best {meta['metric']} over epochs" + (", %" if _is_accuracy(meta["metric"]) else "")


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _status_words(trials: list[FrozenTrial]) -> str:
    """What happened to trials without a result, e.g. "diverged" or "diverged/pruned"."""
    return "/".join(sorted({_status(t) for t in trials}))


def _count_words(trials: list[FrozenTrial]) -> str:
    """e.g. "3" or "2 (+1 diverged)": finished trials, then the others by status."""
    n = sum(_finished(t) for t in trials)
    others: dict[str, int] = {}
    for t in trials:
        if not _finished(t):
            others[_status(t)] = others.get(_status(t), 0) + 1
    extra = ", ".join(f"+{k} {s}" for s, k in sorted(others.items()))
    return f"{n} ({extra})" if extra else str(n)


def _cell(trials: list[FrozenTrial], metric: str) -> str:
    if not trials:
        return EMPTY
    values = [t.value for t in trials if _finished(t)]
    return _mean_std(values, metric) if values else _status_words(trials)


# ---------------------------------------------------------------- results table
def _table_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    # An interrupted trial that was re-queued is superseded by its rerun: counting it would add a "failed".
    return [t for t in trials if not superseded(t)]


def _results_table(trials: list[FrozenTrial], meta: dict[str, Any]) -> str:
    trials = _table_trials(trials)
    if not trials:
        return "No trials yet."
    table = meta.get("table")
    if table and any(table[0] in t.params and table[1] in t.params for t in trials):
        body = _grid_table(trials, table[0], table[1], meta["metric"])
    elif table:
        body = (f"(The table's parameters {table[0]} and {table[1]} are not both searched: one row per "
                f"configuration instead.)\n\n{_config_table(trials, meta)}")
    else:
        body = _config_table(trials, meta)
    return f"{body}\n\nValues: {_value_words(meta)}."


def _grid_table(trials: list[FrozenTrial], r: str, c: str, metric: str) -> str:
    cells: dict[tuple[Any, Any], list[FrozenTrial]] = {}
    for t in trials:
        if r in t.params and c in t.params:
            cells.setdefault((t.params[r], t.params[c]), []).append(t)
    rows = sorted({rv for rv, _ in cells}, key=_sort_key)
    cols = sorted({cv for _, cv in cells}, key=_sort_key)
    header = [f"{r} \\ {c}", *(_fmt_param(cv) for cv in cols)]
    body = [[_fmt_param(rv), *(_cell(cells.get((rv, cv), []), metric) for cv in cols)] for rv in rows]
    note = _grid_footnote(cells, r, c)
    return _md_table(header, body) + (f"\n\n{note}" if note else "")


def _grid_footnote(cells: dict[tuple[Any, Any], list[FrozenTrial]], r: str, c: str) -> str | None:
    """Says over how many trials each numeric cell is, and which params differ inside a cell."""
    counts = {key: _count_words(ts) for key, ts in cells.items() if any(_finished(t) for t in ts)}
    if all(words == "1" for words in counts.values()):
        return None  # one trial per number: nothing to explain
    varying = sorted({name for ts in cells.values() for name in _params_of(ts)
                      if name not in (r, c) and len({t.params.get(name) for t in ts}) > 1})
    lead = "Cells over several trials: mean ± population std of the finished trials"
    lead += f" (which differ in {', '.join(varying)})" if varying else ""
    if len(set(counts.values())) == 1:
        return f"{lead}; n = {next(iter(counts.values()))} per cell."
    listed = sorted(((key, words) for key, words in counts.items() if words != "1"),
                    key=lambda kw: (_sort_key(kw[0][0]), _sort_key(kw[0][1])))
    per_cell = "; ".join(f"{r}={_fmt_param(rv)}, {c}={_fmt_param(cv)}: {words}" for (rv, cv), words in listed)
    rest = "; other cells: 1" if len(listed) < len(counts) else ""
    return f"{lead}; n per cell: {per_cell}{rest}."


def _params_of(trials: list[FrozenTrial]) -> list[str]:
    """Parameter names in the order the search space first asked for them."""
    return list(dict.fromkeys(name for t in trials for name in t.params))


def _config_table(trials: list[FrozenTrial], meta: dict[str, Any]) -> str:
    names = [name for name in _params_of(trials) if name != "seed"]  # seeds are averaged over, not a config
    groups: dict[tuple, list[FrozenTrial]] = {}
    for t in trials:
        groups.setdefault(tuple(t.params.get(n) for n in names), []).append(t)
    sign = -1 if meta["direction"] == "maximize" else 1

    def rank(item: tuple[tuple, list[FrozenTrial]]) -> tuple:
        values = [t.value for t in item[1] if _finished(t)]
        return (0, sign * statistics.fmean(values)) if values else (1, 0.0)  # unfinished configs last

    rows = []
    for key, ts in sorted(groups.items(), key=rank):  # stable: ties keep first-trial order
        tests = [a for t in ts if _finished(t) and (a := _test_acc(t)) is not None]
        shown = [EMPTY if v is None else _fmt_param(v) for v in key]
        rows.append([*shown, _cell(ts, meta["metric"]), _mean_std(tests) if tests else EMPTY, len(ts),
                     _state_counts(ts)])
    value = "best val acc, %" if meta["metric"] == "val_acc" else f"best {meta['metric']}"
    header = [*names, f"{value} (mean ± std over seeds)", "test acc, %", "trials", "states"]
    return _md_table(header, rows)


def _state_counts(trials: list[FrozenTrial]) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[_status(t)] = counts.get(_status(t), 0) + 1
    return ", ".join(f"{k} {s}" for s, k in counts.items())


# ---------------------------------------------------------------- best trial and warnings
def _best_summary(trials: list[FrozenTrial], meta: dict[str, Any]) -> str:
    best = _best(trials, meta["direction"])
    if best is None:
        return f"No finished trial yet ({len(trials)} trials: {_state_counts(trials) or 'none'})."
    epochs = _epochs_run(best)
    return "\n".join([
        f"Best trial: #{best.number} ({epochs} epoch{'s' if epochs != 1 else ''} run)",
        f"Value ({_value_words(meta)}): {_fmt_value(best.value, meta['metric'])}",
        f"Params: {_fmt_params(best.params) or '(none)'}",
        f"Test accuracy, %: {_fmt_value(_test_acc(best))}",
    ])


def _edge_warnings(trials: list[FrozenTrial], best: FrozenTrial | None) -> list[str]:
    if best is None:
        return []
    warnings = []
    for name, value in best.params.items():
        taken = [t.params[name] for t in trials if name in t.params]
        if name == "seed" or not all(_is_number(v) for v in taken) or len(set(taken)) < 3:
            continue  # seeds are not a range; strings have no edges; 2 values are both edges
        low, high = min(taken), max(taken)
        edge = "upper" if value == high else "lower" if value == low else None
        if edge:
            warnings.append(f"best {name}={_fmt_param(value)} is at the {edge} edge of the searched range "
                            f"[{_fmt_param(low)}, {_fmt_param(high)}]: the optimum may lie beyond it")
    return warnings


# ------------------------------------------------------------ figures: each returns None, or why it was skipped
def _series(history: list[dict[str, Any]], key: str) -> list[float]:
    # Diverged losses may be inf or missing: NaN leaves a gap instead of wrecking the axis.
    out = []
    for h in history:
        x = h.get(key)
        out.append(float(x) if _is_number(x) and math.isfinite(x) else math.nan)
    return out


def _curve_styles(drawn: list[FrozenTrial], direction: str) -> list[tuple[FrozenTrial, dict[str, Any]]]:
    """Plot order and style: unlabelled trials first (thin, grey, behind), then the best LEGEND_CAP
    trials best first, so the legend reads best first. Colours without grey, a new dash per 9."""
    sign = -1 if direction == "maximize" else 1
    ranked = sorted(drawn, key=lambda t: (0, sign * t.value, t.number) if _finished(t) else (1, 0, t.number))
    colours = [c for i, c in enumerate(pyplot().cm.tab10.colors) if i != 7]  # tab10's grey is the "rest" colour
    rest = [(t, {"color": "0.75", "linewidth": 0.8, "label": "_nolegend_"}) for t in ranked[LEGEND_CAP:]]
    best = [(t, {"color": colours[i % len(colours)], "linestyle": ("-", "--", ":")[i // len(colours) % 3],
                 "label": f"#{t.number} {_fmt_params(t.params, abbreviate=True)}"})
            for i, t in enumerate(ranked[:LEGEND_CAP])]
    return rest + best


def _plot_curves(trials: list[FrozenTrial], meta: dict[str, Any], path: Path) -> str | None:
    drawn = [t for t in trials if _history(t)]
    if not drawn:
        return "no trial has a per-epoch history yet"
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    styled = _curve_styles(drawn, meta["direction"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    fig.subplots_adjust(left=0.06, right=0.74, top=0.91, bottom=0.08, hspace=0.2, wspace=0.2)  # legend: right
    panels = [("train_loss", "train loss"), ("val_loss", "validation loss"),
              ("train_acc", "train accuracy"), ("val_acc", "validation accuracy")]
    for ax, (key, title) in zip(axes.flat, panels):
        for t, style in styled:
            epochs = [h.get("epoch", i + 1) for i, h in enumerate(_history(t))]
            ax.plot(epochs, _series(_history(t), key), marker=".", **style)
        ax.set_title(title)
        if key.endswith("acc"):  # the bottom row; the columns share their x axis
            ax.set_xlabel("epoch")
        if key.endswith("loss"):
            ax.set_yscale("log")  # a diverged trial's loss is orders of magnitude above the others
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[1, 1].get_legend_handles_labels()
    title = f"best {len(labels)} of {len(drawn)} trials" if len(drawn) > len(labels) else None
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.75, 0.5), fontsize="small", title=title)
    fig.suptitle(f"{meta['name']}: learning curves")
    fig.savefig(path, dpi=100, bbox_inches="tight")  # "tight" grows the canvas to fit long legend labels
    plt.close(fig)
    return None


def _plot_confusion(best: FrozenTrial | None, meta: dict[str, Any], path: Path) -> str | None:
    if best is None:
        return "no finished trial"
    matrix = _test(best).get("confusion_matrix")
    if not matrix:
        return f"the best trial #{best.number} has no test confusion matrix"
    classes = best.user_attrs.get("classes") or [str(i) for i in range(len(matrix))]
    n = len(matrix)
    size = min(4 + 0.45 * n, 20)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"best trial #{best.number}: test acc {_fmt_value(_test_acc(best))}%")
    if n <= 20:  # counts stay legible up to about 20 classes
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=9,
                        color="white" if count > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _plot_importances(study: optuna.Study, trials: list[FrozenTrial], path: Path) -> str | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if len(complete) < 2:
        return f"needs at least 2 complete trials; the study has {len(complete)}"
    if not any(len({t.params.get(name) for t in complete}) > 1 for name in _params_of(complete)):
        return "no parameter varies across the complete trials"
    try:
        importances = optuna.importance.get_param_importances(study)
    except Exception as exc:  # the evaluators reject some spaces (e.g. dynamic ones): skip, say why
        return f"optuna.importance failed: {type(exc).__name__}: {exc}"
    if not importances:
        return "optuna.importance rated no parameter"
    names_desc = list(importances)[::-1]  # barh draws bottom-up: most important on top
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(names_desc)))
    ax.barh(names_desc, [importances[n] for n in names_desc], color="tab:blue")
    ax.set(xlabel="importance (normalised)", title=f"{study.study_name}: parameter importances")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _plot_progress(trials: list[FrozenTrial], meta: dict[str, Any], path: Path) -> str | None:
    if not any(_finished(t) for t in trials):
        return "no finished trial"
    better = max if meta["direction"] == "maximize" else min
    scale = 100 if _is_accuracy(meta["metric"]) else 1
    spent, best = 0, None
    xs, best_so_far, done_x, done_y = [0], [math.nan], [], []
    for t in trials:  # trial-number order: the order the sampler asked for them
        spent += _epochs_run(t)
        if _finished(t):
            best = t.value if best is None else better(best, t.value)
            done_x.append(spent)
            done_y.append(scale * t.value)
        xs.append(spent)
        best_so_far.append(math.nan if best is None else scale * best)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(done_x, done_y, s=14, color="0.6", label="finished trial")
    ax.step(xs, best_so_far, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="epochs spent (cumulative, trial-number order)", ylabel=_value_words(meta),
           title=f"{meta['name']}: search efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# ---------------------------------------------------------------- report.md
def _report_markdown(study: optuna.Study, trials: list[FrozenTrial], meta: dict[str, Any],
                     best: FrozenTrial | None, skipped: dict[str, str]) -> str:
    warnings = _edge_warnings(trials, best)
    sections = [
        f"# Study `{meta['name']}`: {meta['definition']}",
        "## Settings\n\n" + _settings_table(trials, meta),
        "## Results\n\n" + _results_table(trials, meta),
        "## Best trial\n\n" + _best_summary(trials, meta).replace("\n", "  \n"),
        "## Edge warnings\n\n" + ("\n".join(f"- {w}" for w in warnings) if warnings else "none"),
        "## Best trial per class (test set)\n\n" + _per_class_table(best),
        "## Figures\n\n" + _figure_links(skipped),
        "## Pruned, diverged and failed trials\n\n" + _unfinished_table(trials),
        "## All trials\n\n" + _all_trials_table(trials, meta),
    ]
    return "\n\n".join(sections) + "\n"


def _settings_table(trials: list[FrozenTrial], meta: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v)

    rows = [["definition", meta["definition"]], ["metric", meta["metric"]], ["direction", meta["direction"]],
            ["table", " x ".join(meta["table"]) if meta.get("table") else EMPTY]]
    rows += [[k, show(v)] for k, v in meta["settings"].items()]
    if meta.get("mlflow"):
        rows += [[f"mlflow {k}", show(v)] for k, v in meta["mlflow"].items()]
    rows.append(["trials", f"{len(trials)} ({_state_counts(trials) or 'none'})"])
    return _md_table(["setting", "value"], rows)


def _per_class_table(best: FrozenTrial | None) -> str:
    test = _test(best) if best else {}
    if not test.get("precision"):
        return "No per-class test results for the best trial."
    classes = best.user_attrs.get("classes") or [str(i) for i in range(len(test["precision"]))]
    rows = [[name, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", n]
            for name, p, r, f, n in zip(classes, test["precision"], test["recall"], test["f1"], test["support"])]
    head = f"Trial #{best.number}: test accuracy {_fmt_value(test.get('test_acc'))}%"
    if test.get("test_loss") is not None:
        head += f", test loss {test['test_loss']:.4f}"
    return head + ".\n\n" + _md_table(["class", "precision", "recall", "F1", "support"], rows)


def _figure_links(skipped: dict[str, str]) -> str:
    lines = []
    for name, caption in FIGURES.items():
        if name in skipped:
            lines.append(f"{caption}: not drawn ({skipped[name]}).")
        else:
            lines.append(f"### {caption}\n\n![{caption}]({name})")
    return "\n\n".join(lines)


def _unfinished_table(trials: list[FrozenTrial]) -> str:
    rows = [[t.number, _fmt_params(t.params), _status(t), t.user_attrs.get("reason") or EMPTY, _epochs_run(t)]
            for t in trials if t.state in (TrialState.PRUNED, TrialState.FAIL) or _status(t) in UNTRAINED]
    if not rows:
        return "none"
    return _md_table(["trial", "params", "status", "reason", "epochs run"], rows)


def _all_trials_table(trials: list[FrozenTrial], meta: dict[str, Any]) -> str:
    if not trials:
        return "No trials yet."
    names = _params_of(trials)
    rows = [[t.number, t.state.name, _status(t),
             *(_fmt_param(t.params[n]) if n in t.params else EMPTY for n in names),
             _fmt_value(t.value, meta["metric"]), _fmt_value(_test_acc(t)), _epochs_run(t)] for t in trials]
    header = ["trial", "state", "status", *names, "value", "test acc, %", "epochs run"]
    return _md_table(header, rows) + f"\n\nvalue: {_value_words(meta)}; reasons are in the table above."
