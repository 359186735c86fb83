"""The plots of a run and of a comparison, one PNG each (our design).

* :func:`accuracy_matrix_plot`: the accuracy matrix R[i, j] of each scenario as a heatmap;
* :func:`rank_plot`: the rank chosen per adaptable layer and task, and the probe's proximity;
* :func:`accuracy_vs_parameters_plot`: final average accuracy against the parameters added
  after the reference task, one point per run or method.

Figures are drawn with matplotlib's object API (a :class:`~matplotlib.figure.Figure` on an Agg
canvas), so neither pyplot's global state nor the process's backend is touched, and written with
:meth:`pearl_cl.engine.store.RunStore.write_bytes`: atomically, and listed with their SHA-256 in the
directory's ``manifest.json``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from pearl_cl.engine.engine import RunResult
from pearl_cl.engine.progress import SCENARIO
from pearl_cl.engine.store import RunStore
from pearl_cl.errors import ConfigError
from pearl_cl.methods.learner import Learner
from pearl_cl.registry import METHODS

ACCURACY_PNG = "plots/accuracy_matrix.png"
RANKS_PNG = "plots/ranks.png"
PARAMETERS_PNG = "plots/accuracy_vs_parameters.png"
ANNOTATE_TASKS = 12  # cells carry their number up to this many tasks (columns)
ANNOTATE_LAYERS = 40  # ... and, in the rank plot, this many layers (rows)
DPI = 130


def _style(method: str) -> type[Learner]:
    """The registered class whose plot attributes (marker, size, joined) ``method`` takes; the
    :class:`~pearl_cl.methods.learner.Learner` defaults for a method that is not registered (e.g. a plugin's run read without the plugin)."""
    try:
        return METHODS.get(method)
    except ConfigError:
        return Learner


@dataclass(frozen=True)
class Point:
    """One run, or one method's mean over seeds, on the accuracy-against-parameters plot.

    Attributes:
        label: the text next to the point (e.g. ``pearl``, ``lora (r=4)``).
        method: the registered method that ran; the points of a method that is
            :attr:`~pearl_cl.methods.learner.Learner.joined_in_plots` (a fixed-rank frontier) are
            joined by a line.
        params: parameters added after the reference task (count; mean over seeds).
        task_il, routed: final average accuracy in % with task labels, and without them
            through the router (the benchmark's class-IL or domain-IL); means over seeds.
        task_il_std, routed_std: their standard deviations over seeds in percentage points
            (None for a single run: no error bar).
    """

    label: str
    method: str
    params: float
    task_il: float
    routed: float
    task_il_std: float | None = None
    routed_std: float | None = None


def _png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes, cropped to its artists (no timestamp or software metadata, so the
    same figure gives the same bytes)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1, metadata={"Software": None})
    return buffer.getvalue()


def _count_label(value: float, _position: int) -> str:
    """A parameter count as a short axis label: 500, 20k, 1.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _cmap(name: str):
    """A copy of colormap ``name`` drawing NaN cells (nothing to show) as the blank background."""
    return matplotlib.colormaps[name].with_extremes(bad="none")


def _annotate(ax, values: np.ndarray, image, fmt: str, fontsize: float) -> None:
    """Write each finite cell of ``values`` with ``fmt``, dark on light colours, light on dark."""
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            r, g, b, _ = image.cmap(image.norm(value))
            colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour, fontsize=fontsize)


def _task_ticks(ax, axis: str, names: list[str]) -> None:
    """Tick every task on ``axis`` (``x`` or ``y``) up to 20 tasks, about 10 ticks beyond."""
    step = 1 if len(names) <= 20 else -(-len(names) // 10)
    positions = list(range(0, len(names), step))
    getattr(ax, f"set_{axis}ticks")(positions, [names[k] for k in positions])


def accuracy_matrix_plot(store: RunStore, result: RunResult, relative: str = ACCURACY_PNG) -> Path:
    """Write the accuracy matrices of ``result`` as heatmaps, one panel per scenario: Task-IL
    (task label given) and the benchmark's scenario without labels (class-IL or domain-IL,
    through the router). Cell (i, j) is R[i, j], the accuracy in % on task j's test set after
    learning task i; cells of tasks not yet learned (j > i) are blank; with up to
    :data:`ANNOTATE_TASKS` tasks every cell carries its value. One colour bar, 0–100 %.

    Returns the PNG's path (``store.root / relative``).

    Raises:
        PearlError: the file or the manifest cannot be written.
    """
    routed = result.metrics["routing"]["scenario"]
    names = [SCENARIO, routed]
    n = result.accuracy[SCENARIO].shape[0]
    side = max(2.6, 0.45 * n + 1.2)
    fig = Figure(figsize=(2 * side + 1.2, side + 0.6), layout="constrained")
    axes = fig.subplots(1, 2)
    tasks = [str(j + 1) for j in range(n)]
    for ax, name in zip(axes, names):
        acc = result.accuracy[name]
        image = ax.imshow(np.ma.masked_invalid(acc), cmap=_cmap("viridis"), vmin=0, vmax=100, aspect="equal")
        if n <= ANNOTATE_TASKS:
            _annotate(ax, acc, image, ".1f" if n <= 6 else ".0f", 8)
        _task_ticks(ax, "x", tasks)
        _task_ticks(ax, "y", tasks)
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after learning task i")
        label = "Task-IL (task label given)" if name == SCENARIO else f"{name} (routed)"
        ax.set_title(f"{label}\naverage accuracy {np.mean(acc[-1]):.2f}%", fontsize=10)
    fig.colorbar(image, ax=list(axes), label="accuracy R[i, j] (%)", shrink=0.85)
    return store.write_bytes(relative, _png(fig))


def rank_plot(store: RunStore, result: RunResult, relative: str = RANKS_PNG) -> Path | None:
    """Write the rank chosen per adaptable layer (rows, in network order) and task (columns)
    as a heatmap, beside a second heatmap of the probe's proximity ‖ΔW‖_F / ‖W_ref‖_F
    (dimensionless) per layer and task; rank 0 means the layer is not adapted for that task.
    With up to :data:`ANNOTATE_TASKS` tasks and :data:`ANNOTATE_LAYERS` layers every cell
    carries its value. Only tasks after the reference task have ranks.

    Returns the PNG's path, or None (nothing written) when the run has no ranks: a baseline
    without adapters, or only the reference task learned.

    Raises:
        PearlError: the file or the manifest cannot be written.
    """
    later = [r for r in result.records if not r.reference and r.ranks]
    if not later:
        return None
    layers = list(later[0].ranks)
    ranks = np.array([[r.ranks[layer].rank for r in later] for layer in layers], dtype=float)
    proximity = np.array([[r.ranks[layer].proximity for r in later] for layer in layers], dtype=float)
    annotate = len(later) <= ANNOTATE_TASKS and len(layers) <= ANNOTATE_LAYERS
    width = max(2.4, 0.6 * len(later) + 0.9)
    label_width = 0.07 * max(len(layer) for layer in layers) + 0.4
    fig = Figure(figsize=(2 * width + label_width + 1.6, max(2.4, 0.32 * len(layers) + 1.4)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = ((ranks, "viridis", dict(vmin=0, vmax=max(1.0, ranks.max())), "d", "rank per layer and task", "rank"),
              (proximity, "cividis", dict(vmin=0, vmax=max(proximity.max(), 1e-12)), ".2g",
               "proximity per layer and task", r"proximity $\|\Delta W\|_F \,/\, \|W_{ref}\|_F$"))
    for ax, (values, cmap, limits, fmt, title, bar) in zip(axes, panels):
        image = ax.imshow(values, cmap=_cmap(cmap), aspect="auto", **limits)
        if annotate:
            _annotate(ax, values if fmt != "d" else values.astype(int), image, fmt, 7)
        _task_ticks(ax, "x", [r.task.removeprefix("task") for r in later])
        ax.set_xlabel("task")
        ax.set_title(title, fontsize=10)
        colorbar = fig.colorbar(image, ax=ax, label=bar)
        if fmt == "d":
            colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_yticks(range(len(layers)), layers, fontsize=8)
    axes[0].set_ylabel("adaptable layer (network order)")
    return store.write_bytes(relative, _png(fig))


def accuracy_vs_parameters_plot(store: RunStore, points: list[Point], scenario: str,
                                relative: str = PARAMETERS_PNG) -> Path:
    """Write final average accuracy (%) against parameters added after the reference task
    (count, log scale), one panel for Task-IL and one for ``scenario`` (``class-il`` or
    ``domain-il``, routed), one point per entry of ``points`` (colour and marker named in the
    legend), with an error bar of one standard deviation where a point is a mean over seeds. The points of
    each method that is ``joined_in_plots`` (fixed ranks) are joined by a dashed line in order of parameters. Points that added no
    parameters cannot sit on a log axis; they are named under the plot.

    Returns the PNG's path.

    Raises:
        ValueError: ``points`` is empty.
        PearlError: the file or the manifest cannot be written.
    """
    if not points:
        raise ValueError("accuracy_vs_parameters_plot needs at least one point")
    shown = [p for p in points if p.params > 0]
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    colours = matplotlib.colormaps["tab10"].colors
    panels = ((axes[0], "task_il", "Task-IL (task label given)"), (axes[1], "routed", f"{scenario} (routed)"))
    for ax, key, title in panels:
        for method in dict.fromkeys(p.method for p in shown if _style(p.method).joined_in_plots):
            line = sorted((p for p in shown if p.method == method), key=lambda p: p.params)
            if len(line) > 1:
                ax.plot([p.params for p in line], [getattr(p, key) for p in line], "--", color="0.6", lw=1, zorder=1,
                        label=f"{method} at several settings")
        for k, p in enumerate(shown):
            style = _style(p.method)
            ax.errorbar(p.params, getattr(p, key), yerr=getattr(p, f"{key}_std") or None, fmt=style.marker,
                        color=colours[k % len(colours)], markersize=style.marker_size, capsize=3, zorder=3, label=p.label)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_count_label))
        ax.xaxis.set_minor_formatter(NullFormatter())  # matplotlib's minor labels collide on short ranges
        ax.margins(x=0.15, y=0.12)
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, -1.0), min(high, 101.0))  # accuracies: the margin must not invent values above 100 %
        if not shown:
            ax.set_ylim(0, 100)
            ax.text(0.5, 0.5, "no run added parameters after the first task", transform=ax.transAxes, ha="center")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("parameters added after the first task (log scale)")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("final average accuracy (%)")
    if shown:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8, frameon=False)
    hidden = [p.label for p in points if p.params <= 0]
    if hidden:
        fig.supxlabel(f"not shown (no parameters added): {', '.join(hidden)}", fontsize=8)
    return store.write_bytes(relative, _png(fig))
