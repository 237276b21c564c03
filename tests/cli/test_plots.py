"""Plots: legends outside the axes (they cover no bar), no entry for what is not drawn,
integer ticks for unit counts, one colour per model, labelled error bars."""

from __future__ import annotations

import pytest

from ndpc.compiler.experiments import plots


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions would save: (legend labels, legend outside?, axes)."""
    seen = []

    def fake_save(fig, path):
        fig.canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                seen.append(([], True, ax))
                continue
            labels = [t.get_text() for t in legend.get_texts()]
            outside = legend.get_window_extent().x0 >= ax.get_window_extent().x1
            seen.append((labels, outside, ax))

    monkeypatch.setattr(plots, "_save", fake_save)
    return seen


def test_grouped_bars_skip_undrawn_series_and_keep_the_legend_off_the_bars(drawn, tmp_path):
    plots.grouped_bars(["a", "b"], {"x": [1.0, 2.0], "nothing": [None, None], "y": [3.0, None]},
                       "v", "t", tmp_path / "p.png", hline=1.0, hline_label="ref")  # fmt: skip
    [(labels, outside, ax)] = drawn
    assert sorted(labels) == ["ref", "x", "y"]
    assert outside
    assert len(ax.patches) == 3  # bars of x (2) and y (1); `nothing` takes no slot


def test_lines_plot_integer_unit_ticks_and_one_colour_per_model(drawn, tmp_path):
    styles = {"m1 paper": {"color": "tab:blue"}, "m1 ndpc": {"color": "tab:blue", "ls": ":"},
              "m2 paper": {"color": "tab:red"}}  # fmt: skip
    series = {"m1 paper": [(2, 1.0), (4, 1.2)], "m1 ndpc": [(2, 1.1), (4, 1.3)],
              "m2 paper": [(4, 2.0)], "m2 ndpc": []}  # fmt: skip
    plots.lines_plot(series, "NDP units", "speedup", "t", tmp_path / "p.png", styles=styles)
    [(labels, outside, ax)] = drawn
    assert "m2 ndpc" not in labels and outside  # no points, no entry
    assert list(ax.get_xticks()) == [2, 4]
    colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
    assert colours["m1 paper"] == colours["m1 ndpc"] == "tab:blue" != colours["m2 paper"]


def test_compare_plot_labels_its_error_bars(drawn, tmp_path):
    row = {"name": "monde", "e2e_s": 1.0, "gpu_busy": 0.2, "ndp_busy": 0.5, "ndp_busy_std": 0.05,
           "speedup_vs_monde": 1.0}  # fmt: skip
    plots.compare_plot([row, {**row, "name": "tp", "e2e_s": 0.5}], "m on t", tmp_path / "p.png")
    (_, _, top), (labels, outside, _) = drawn
    assert any("std across NDP units" in label for label in labels) and outside
    assert "oracle" not in top.get_title()  # none drawn, none mentioned


def test_trace_heat_map_has_whole_number_layer_and_expert_ticks(monkeypatch, tmp_path):
    import matplotlib.figure

    from ndpc.traces.show import plot_heatmap

    ticks = {}

    def fake_savefig(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        ticks["x"], ticks["y"] = list(ax.get_xticks()), list(ax.get_yticks())

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fake_savefig)
    report = {"tokens": 10, "layers": [{"counts": [3, 1, 4, 2]}, {"counts": [1, 5, 2, 2]}]}
    plot_heatmap(report, tmp_path / "h.png", title="t")
    assert ticks["y"] and all(float(v).is_integer() for v in ticks["y"])
    assert ticks["x"] and all(float(v).is_integer() for v in ticks["x"])
