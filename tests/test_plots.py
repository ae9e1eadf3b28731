"""Plots: real PNG files of the expected size, and a clear error without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadbench.errors import UsageError
from loadbench.report import plots
from tests.test_report import make_doc, make_stage, sweep_doc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_plots_are_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UsageError, match=r"pip install 'loadbench\[plot\]'"):
        plots.plot_files([("r1", sweep_doc())], tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


def test_plot_files_writes_real_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [("cpu", sweep_doc()), ("gpu box", sweep_doc())]
    paths = plots.plot_files(runs, tmp_path / "plots")
    assert [p.name for p in paths] == [
        "throughput.png",
        "latency.png",
        "spectrum-cpu-sim-model.png",
        "spectrum-gpu_box-sim-model.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 20_000  # axes, lines and text, not an empty canvas


def test_png_pixel_sizes_follow_the_figure_sizes(tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    paths = plots.plot_files([("r1", sweep_doc())], tmp_path)
    shapes = {p.name: image.imread(p).shape for p in paths}
    # inches x 150 dpi, rows first
    assert shapes["throughput.png"][:2] == (930, 975)
    assert shapes["latency.png"][:2] == (1020, 975)
    assert shapes["spectrum-r1-sim-model.png"][:2] == (690, 1650)
    assert shapes["throughput.png"][2] in (3, 4)  # colour, not a blank greyscale


def test_open_and_closed_loop_runs_get_a_column_each(tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    rate = make_doc(
        [make_stage("m", r, mode="rate") for r in (2.0, 5.0, 10.0)],
        knee="rate=5/s",
        failing=("rate=10/s",),
    )
    paths = plots.plot_files([("closed", sweep_doc()), ("open", rate)], tmp_path)
    height, width = image.imread(paths[0]).shape[:2]
    assert (height, width) == (930, 2 * 975)


def test_stages_without_successes_and_tiny_samples_still_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    stages = [
        make_stage("m", 1, ttft_ms=(42.0,), itl_ms=(), e2e_ms=(300.0,)),
        make_stage("m", 2, ttft_ms=(), itl_ms=(), e2e_ms=(), failed=4),
        make_stage("m", 4, ttft_ms=(0.5, 50_000.0), e2e_ms=(1.0, 90_000.0)),  # log y
    ]
    paths = plots.plot_files([("r", make_doc(stages, slo=(), knee=None))], tmp_path)
    assert len(paths) == 3
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)


def test_plot_images_are_the_files_bytes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [("r1", sweep_doc())]
    images = plots.plot_images(runs)
    paths = plots.plot_files(runs, tmp_path)
    assert list(images) == [p.name for p in paths]
    for path in paths:  # same documents, same bytes: reports can be diffed and cached
        assert images[path.name] == path.read_bytes()


@pytest.mark.parametrize(
    ("x", "label"),
    [(1.0, "0%"), (2.0, "50%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%")],
)
def test_spectrum_ticks_read_as_percentiles(x: float, label: str) -> None:
    assert plots._percentile_label(x) == label
