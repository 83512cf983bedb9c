"""Figures for the notes (matplotlib, Agg backend), as PNG and PDF bytes.

The functions draw data they are given (profiles, counts); they compute
nothing. Output is byte-identical across runs: default style, fixed size and
resolution, bundled font, and no creation date or software name in the
files' metadata.

>>> figure = path_length_figure({0: 1, 1: 3, 2: 3, 3: 1})
>>> sorted(figure), figure["png"][:4]
(['pdf', 'png'], b'\\x89PNG')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

#: Figure size in inches and PNG resolution.
SIZE = (6.4, 3.4)
DPI = 120
_METADATA: dict[str, dict[str, str | None]] = {
    "png": {"Software": None}, "pdf": {"Software": None, "CreationDate": None}}
#: matplotlib's settings for every figure (its stubs type the keys as literals).
_STYLE: dict[RcKeyType, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "derive",
    "pdf.compression": 6,
}
_COLORS = {"none": "#c0392b", "pre": "#2471a3", "post": "#229954"}
_MARKERS = {"none": "o", "pre": "s", "post": "^"}
#: Line colours of the figures with one line per block.
_CYCLE = ("#c0392b", "#2471a3", "#229954", "#8e44ad", "#d35400", "#16a085", "#7f8c8d",
          "#2c3e50", "#b7950b", "#a93226", "#1f618d")


def _agg() -> None:
    """Choose matplotlib's Agg backend; pyplot is imported after it."""
    import matplotlib

    matplotlib.use("Agg", force=True)


def _save(fig: Figure) -> dict[str, bytes]:
    import io

    out: dict[str, bytes] = {}
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
        out[fmt] = buffer.getvalue()
    return out


def moments_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    measured: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> dict[str, bytes]:
    """Forward q_k and backward d_k/d_K against depth, one line per norm, log scale.

    ``series`` maps a norm name to (forward profile, backward profile), as derived;
    ``measured`` (optional) adds simulated values as unfilled markers.

    >>> fig = moments_figure({"none": ([1, 2, 4], [4, 2, 1])}, "He, ReLU")
    >>> fig["pdf"][:5]
    b'%PDF-'
    """
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=SIZE, sharex=True)
        for ax, index, label in (
            (axes[0], 0, "forward: qₖ = E[hₖ²]"),
            (axes[1], 1, "backward: dₖ / d_K"),
        ):
            for norm, values in series.items():
                ys = [float(v) for v in values[index]]
                ax.plot(range(len(ys)), ys, color=_COLORS.get(norm), marker=_MARKERS.get(norm),
                        markersize=3, linewidth=1.4, label=f"{norm} (derived)")
                if measured and norm in measured:
                    ms = [float(v) for v in measured[norm][index]]
                    ax.plot(range(len(ms)), ms, linestyle="none", marker="o", markersize=6,
                            markerfacecolor="none", color=_COLORS.get(norm),
                            label=f"{norm} (simulated)")
            ax.set_yscale("log")
            shown = [float(v) for values in series.values() for v in values[index]]
            _log_ticks(ax, min(shown), max(shown))
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel("block k")
            ax.set_title(label)
        axes[0].legend(fontsize=7, loc="upper left")
        fig.suptitle(title)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.84, wspace=0.22)
        out = _save(fig)
        plt.close(fig)
    return out


_LINES = ("#2471a3", "#c0392b", "#229954", "#7d3c98", "#b9770e")


def _log_ticks(ax: Axes, low: float | None = None, high: float | None = None) -> None:
    """Log-axis labels a reader can read: 1, 10, 100, then 10³ ...; 1, 2, 5 ... on a short axis.

    At most seven labels; a range of less than three decades also labels 2 and 5.
    """
    import matplotlib.ticker

    from derive.derivation.printing import superscript

    def label(value: float, _position: int) -> str:
        exponent = math.floor(math.log10(value) + 1e-9) if value > 0 else 0
        return f"{value:g}" if -2 <= exponent <= 3 else "10" + superscript(str(exponent))

    short = low is not None and high is not None and low > 0 and high / low < 1000
    subs = (1.0, 2.0, 5.0) if short else (1.0,)
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs, numticks=7))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(label))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


#: The dashes of :func:`curves_figure`'s lines, one a line (at most four lines).
_DASHES = ("-", "--", ":", "-.")
#: The dashes :func:`depth_figure` cycles through.
_STYLES = ("-", "--", "-.", ":", "-", "--")


def _lines_against_depth(panels: Mapping[str, Mapping[str, Sequence[float]]], title: str,
                         xlabel: str, log: Callable[[str], bool],
                         style: Callable[[int], tuple[str, str] | None], linewidth: float,
                         legend: str, wspace: float) -> dict[str, bytes]:
    """One panel a title, one line a label, values against depth 0..K: line i drawn in
    ``style(i)`` (a colour and a dash; None: no more lines), the panels where ``log``
    holds on a log scale."""
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=SIZE, squeeze=False)
        for ax, (panel, lines) in zip(axes[0], panels.items(), strict=True):
            every = []
            for i, (label, values) in enumerate(lines.items()):
                chosen = style(i)
                if chosen is None:
                    break
                ys = [float(v) for v in values]
                every += ys
                ax.plot(range(len(ys)), ys, color=chosen[0], linestyle=chosen[1],
                        linewidth=linewidth, label=label)
            if log(panel):
                ax.set_yscale("log")
                _log_ticks(ax, min(every), max(every))
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=5))
            ax.set_xlabel(xlabel)
            ax.set_title(panel)
        axes[0][0].legend(fontsize=7, loc=legend)
        fig.suptitle(title)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.84, wspace=wspace)
        out = _save(fig)
        plt.close(fig)
    return out


def curves_figure(panels: Mapping[str, Mapping[str, Sequence[float]]],
                  title: str, xlabel: str = "block k") -> dict[str, bytes]:
    """One panel a title, one line a label (at most four), values against depth 0..K, log
    scale.

    >>> fig = curves_figure({"pre-LN": {"ReLU": [1, 2, 3], "tanh": [1, 1.5, 2]}}, "q")
    >>> fig["png"][:4]
    b'\\x89PNG'
    """
    return _lines_against_depth(
        panels, title, xlabel, lambda panel: True,
        lambda i: (_LINES[i], _DASHES[i]) if i < len(_DASHES) else None,
        linewidth=1.6, legend="upper left", wspace=0.3)


def depth_figure(panels: Mapping[str, Mapping[str, Sequence[float]]], title: str,
                 log: Sequence[str] = (), xlabel: str = "layer k") -> dict[str, bytes]:
    """One panel a title, one line a label, values against depth 0..K; the panels named in
    ``log`` on a log scale, the others linear.

    >>> fig = depth_figure({"rho": {"a": [0.5, 0.9, 1.0]}, "q": {"a": [1, 2, 4]}}, "t",
    ...                    log=("q",))
    >>> fig["png"][:4]
    b'\\x89PNG'
    """
    return _lines_against_depth(
        panels, title, xlabel, lambda panel: panel in log,
        lambda i: (_CYCLE[i % len(_CYCLE)], _STYLES[i % len(_STYLES)]),
        linewidth=1.5, legend="lower right", wspace=0.25)


def warm() -> None:
    """Import matplotlib (a second process does this while the first derives the data)."""
    _agg()
    import matplotlib.pyplot  # noqa: F401


def draw(specs: Mapping[str, tuple[str, tuple, dict]]) -> dict[str, dict[str, bytes]]:
    """Draw figures: stem -> (name of a figure function here, args, kwargs) -> their bytes.

    >>> sorted(draw({"p": ("path_length_figure", ({0: 1, 1: 1},), {})})["p"])
    ['pdf', 'png']
    """
    makers: dict[str, Callable[..., dict[str, bytes]]] = {
        "moments_figure": moments_figure, "curves_figure": curves_figure,
        "path_length_figure": path_length_figure, "variants_figure": variants_figure,
        "gradient_length_figure": gradient_length_figure,
        "correlation_figure": correlation_figure, "phase_figure": phase_figure,
        "input_gradient_figure": input_gradient_figure, "depth_figure": depth_figure}
    return {stem: makers[name](*args, **kwargs) for stem, (name, args, kwargs) in specs.items()}


def path_length_figure(counts: Mapping[int, int], title: str = "") -> dict[str, bytes]:
    """Bar chart of the number of paths of each length (Jacobians on the path).

    >>> fig = path_length_figure({0: 1, 1: 2, 2: 1}, "2 blocks")
    >>> len(fig["png"]) > 1000
    True
    """
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    lengths = sorted(counts)
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=SIZE)
        bars = ax.bar(lengths, [counts[j] for j in lengths], color=_COLORS["pre"], width=0.7)
        ax.bar_label(bars, fontsize=7)
        ax.set_xlabel("path length (Jacobians on the path)")
        ax.set_ylabel("number of paths")
        ax.set_xticks(lengths)
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.14, top=0.9)
        out = _save(fig)
        plt.close(fig)
    return out


def variants_figure(series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                    title: str) -> dict[str, bytes]:
    """Forward q_k and the gradient ratio d_0/d_k against depth, one line per block, on
    log axes.

    ``series`` maps a block's name to (q_0..q_K, d_0/d_k for k = 0..K), as derived.

    >>> fig = variants_figure({"none": ([1, 2, 4], [1, 2, 4])}, "He, ReLU")
    >>> fig["png"][:4]
    b'\\x89PNG'
    """
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cycle = _CYCLE
    styles = ("-", "--", "-.", ":")
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(SIZE[0], SIZE[1] + 1.0), sharex=True)
        for ax, index, label in ((axes[0], 0, "forward: qₖ"), (axes[1], 1, "backward: d₀/dₖ")):
            for i, (name, values) in enumerate(series.items()):
                ys = [float(v) for v in values[index]]
                ax.plot(range(1, len(ys)), ys[1:], color=cycle[i % len(cycle)],
                        linestyle=styles[i % len(styles)], linewidth=1.3, label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.set_xlabel("block k")
            ax.set_title(label)
        axes[1].legend(fontsize=6.5, loc="upper left", ncol=2)
        fig.suptitle(title)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.87, wspace=0.22)
        out = _save(fig)
        plt.close(fig)
    return out


def gradient_length_figure(series: Mapping[str, Sequence[float]], title: str,
                           paths: str = "share of paths") -> dict[str, bytes]:
    """The share of the paths (bars, ``series[paths]``) and each block's share of the
    gradient (lines) against the path length.

    >>> fig = gradient_length_figure({"share of paths": [0.25, 0.5, 0.25],
    ...                               "pre": [0.5, 0.4, 0.1]}, "2 blocks")
    >>> fig["png"][:4]
    b'\\x89PNG'
    """
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt

    cycle = _CYCLE
    styles = ("-", "-", "--", "-.")
    markers = ("o", "s", "", "^")
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(SIZE[0], SIZE[1] + 0.6))
        counted = [100 * float(v) for v in series[paths]]
        ax.bar(range(len(counted)), counted, color="#bdc3c7", width=0.8, label=paths)
        lines = [(name, values) for name, values in series.items() if name != paths]
        for i, (name, values) in enumerate(lines):
            ys = [100 * float(v) for v in values]
            ax.plot(range(len(ys)), ys, color=cycle[i % len(cycle)],
                    linestyle=styles[i % len(styles)], marker=markers[i % len(markers)],
                    markersize=2.5, linewidth=1.2, label=f"gradient, {name}")
        ax.set_xlabel("path length L (branches passed)")
        ax.set_ylabel("share (%)")
        ax.set_xlim(-0.8, len(counted) - 0.2)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(title)
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.13, top=0.91)
        out = _save(fig)
        plt.close(fig)
    return out


def correlation_figure(panels: Mapping[str, Mapping[str, Sequence[float]]], title: str,
                       xlabels: Sequence[str] = ("block k", "depth K"),
                       floor: float | None = None) -> dict[str, bytes]:
    """One panel a title, one line a label, values at 1..N (index 0 is not drawn), on
    log-log axes; ``floor`` (optional) cuts the y axes below it.

    >>> fig = correlation_figure({"1 - rho": {"plain": [0.5, 0.3, 0.2]},
    ...                           "rho grad": {"plain": [1, 0.5, 0.1]}}, "He, ReLU")
    >>> fig["png"][:4]
    b'\\x89PNG'
    """
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(SIZE[0], SIZE[1] + 0.6),
                                 squeeze=False)
        for ax, xlabel, (panel, lines) in zip(axes[0], xlabels, panels.items(), strict=True):
            _log_log_panel(ax, lines, floor)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.set_xlabel(xlabel)
            ax.set_title(panel)
        axes[0][0].legend(fontsize=6.5, loc="lower left")
        fig.suptitle(title)
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.13, top=0.86, wspace=0.25)
        out = _save(fig)
        plt.close(fig)
    return out


def _log_log_panel(ax: Axes, lines: Mapping[str, Sequence[float]], floor: float | None) -> None:
    """One line a label at x = 1..N on log-log axes, cut a decade below ``floor``."""
    styles = ("-", "--", "-.", ":", "-", "--")
    every = []
    for i, (label, values) in enumerate(lines.items()):
        shown = [(x, float(y)) for x, y in enumerate(values) if x >= 1 and float(y) > 0
                 and (floor is None or float(y) >= floor / 10)]
        every += [y for _, y in shown if floor is None or y >= floor]
        ax.plot([x for x, _ in shown], [y for _, y in shown], color=_CYCLE[i % len(_CYCLE)],
                linestyle=styles[i % len(styles)], linewidth=1.4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    low = min(every) if floor is None else max(min(every), floor)
    if floor is not None:
        ax.set_ylim(bottom=low)
    _decade_ticks(ax, low, max(every))


def _decade_ticks(ax: Axes, low: float, high: float) -> None:
    """Log-axis labels 1, 10, 100 (10³ beyond), with 2 and 5 (as 2·10⁻³) on a range of
    less than three decades."""
    import matplotlib.ticker

    from derive.derivation.printing import superscript

    def label(value: float, _position: int) -> str:
        if value <= 0:
            return ""
        exponent = math.floor(math.log10(value) + 1e-9)
        if -2 <= exponent <= 3:
            return f"{value:g}"
        mantissa = round(value / 10**exponent)
        return ("" if mantissa == 1 else f"{mantissa}·") + "10" + superscript(str(exponent))

    subs = (1.0, 2.0, 5.0) if high / low < 1000 else (1.0,)
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs, numticks=9))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(label))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def phase_figure(panels: Mapping[str, Mapping[str, object]], title: str) -> dict[str, bytes]:
    """Phase diagrams in the (sigma_w^2, sigma_b^2) plane, one panel a title: ``lines``
    (label -> [(sigma_b^2, critical sigma_w^2), ...], derived points joined), ``points``
    (label -> (sigma_w^2, sigma_b^2)) and ``regions`` (label -> (sigma_w^2, sigma_b^2),
    where the label is written); the region left of the first line is shaded.

    >>> fig = phase_figure({"tanh": {"lines": {"tanh": [(0, 1), (1, 3)]},
    ...                              "regions": {"ordered": (0.5, 0.5)}}}, "phases")
    >>> fig["png"][:4]
    b'\\x89PNG'
    """
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt

    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(SIZE[0], SIZE[1] + 0.4),
                                 squeeze=False)
        for ax, (panel, parts) in zip(axes[0], panels.items(), strict=True):
            lines = parts.get("lines", {})
            assert isinstance(lines, Mapping)
            for i, (label, pairs) in enumerate(lines.items()):
                bs = [float(b) for b, _ in pairs]
                ws = [float(w) for _, w in pairs]
                if i == 0:
                    ax.fill_betweenx(bs, 0, ws, color="#d6eaf8", linewidth=0)
                ax.plot(ws, bs, color=_CYCLE[i % 11], linestyle=("-", "--")[i % 2],
                        marker="o", markersize=2.5, linewidth=1.4, label=f"{label}: χ₁ = 1")
            points = parts.get("points", {})
            assert isinstance(points, Mapping)
            for i, (label, (w, b)) in enumerate(points.items()):
                ax.plot([float(w)], [float(b)], linestyle="none", marker=("s", "^", "D")[i % 3],
                        markersize=5, color=_CYCLE[(i + 3) % 11], label=label)
            regions = parts.get("regions", {})
            assert isinstance(regions, Mapping)
            for label, (w, b) in regions.items():
                ax.text(float(w), float(b), label, ha="center", va="center", fontsize=9,
                        style="italic")
            right = [float(w) for pairs in lines.values() for _, w in pairs]
            right += [float(w) for w, _ in (*points.values(), *regions.values())]
            ax.set_xlim(0, 1.15 * max(right))
            ax.set_ylim(bottom=0)
            ax.set_xlabel("σ_w² (Var W = σ_w²/fan-in)")
            ax.set_ylabel("σ_b²")
            ax.set_title(panel)
            ax.legend(fontsize=6.5, loc="upper left")
        fig.suptitle(title)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.86, wspace=0.25)
        out = _save(fig)
        plt.close(fig)
    return out


def input_gradient_figure(x: Sequence[float], rows: Mapping[str, Mapping[str, Sequence[float]]],
                          title: str) -> dict[str, bytes]:
    """dy/dx against the input x, one row of panels a network, one panel a depth (each
    panel on its own scale), as UDL fig. 11.3.

    >>> fig = input_gradient_figure([0, 1, 2], {"plain": {"K = 1": [1, 2, 1]}}, "dy/dx")
    >>> fig["png"][:4]
    b'\\x89PNG'
    """
    _agg()
    import matplotlib
    import matplotlib.pyplot as plt

    xs = [float(v) for v in x]
    columns = max(len(panels) for panels in rows.values())
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig, axes = plt.subplots(len(rows), columns, figsize=(SIZE[0], 1.9 * len(rows) + 0.7),
                                 squeeze=False, sharex=True)
        for r, (row, panels) in enumerate(rows.items()):
            for c, (panel, values) in enumerate(panels.items()):
                ax = axes[r][c]
                ax.plot(xs, [float(v) for v in values], color=_CYCLE[r % 11], linewidth=0.9)
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
                ax.yaxis.get_offset_text().set_fontsize(7)
                ax.tick_params(labelsize=7)
                ax.set_title(f"{row}, {panel}", fontsize=8)
                if r == len(rows) - 1:
                    ax.set_xlabel("input x")
            for c in range(len(panels), columns):
                axes[r][c].set_visible(False)
            axes[r][0].set_ylabel("dy/dx")
        fig.suptitle(title)
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.1, top=0.86, wspace=0.35,
                            hspace=0.45)
        out = _save(fig)
        plt.close(fig)
    return out
