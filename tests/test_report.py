import pytest
from PIL import Image

from selfplay.cli import main
from selfplay.curriculum.report import signal_windows, solve_rate_bin

FIGURES = ["solve_rates.png", "fractions.png", "pool.png", "student.png", "rewards.png", "concepts.png",
           "embedding_map.png"]


def test_report_on_a_real_run(short_run, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(short_run), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    for name in FIGURES:
        assert f'src="{name}"' in page
        with Image.open(out / name) as image:
            assert image.size == (700, 400)
            low, high = image.convert("L").getextrema()
            assert low < high  # something was drawn
    assert "Sample problems" in page and "2 steps logged" in page
    assert "<h2>Signals over the run</h2>" in page and "<td>1-1</td>" in page and "<td>2-2</td>" in page


def test_solve_rate_bins_against_the_band():
    assert [solve_rate_bin(r, 0.25, 0.875) for r in (0.0, 0.125, 0.25, 0.875, 0.9, 1.0)] == [
        "never solved", "below band", "in band", "in band", "above band", "always solved"]
    assert solve_rate_bin(1.0, 0.5, 1.0) == "in band"  # an edge belongs to the band


def test_signal_windows_split_the_steps_and_count_what_each_window_wrote():
    metrics = [{"step": s, "student/format_mean": s / 10} for s in range(1, 6)]
    completions = [
        {"step": 1, "valid": False, "solve_rate": None},
        {"step": 1, "valid": True, "solve_rate": 0.0},
        {"step": 2, "valid": True, "solve_rate": 0.5},
        {"step": 4, "valid": True, "solve_rate": 1.0},
        {"step": 5, "valid": True, "solve_rate": 0.125},
    ]
    first, second, third = signal_windows(metrics, completions, (0.25, 0.875), windows=3)
    assert [first["steps"], second["steps"], third["steps"]] == ["1-2", "3-4", "5-5"]
    assert first["completions"] == 3 and first["valid"] == 2 / 3 and first["in_band"] == 1 / 3
    assert first["student_format"] == pytest.approx(0.15) and first["solve_rate"] == 0.25
    assert first["solve_rate_bins"] == {"never solved": 1, "below band": 0, "in band": 1, "above band": 0,
                                        "always solved": 0}
    assert second["solve_rate_bins"]["always solved"] == 1 and second["in_band"] == 0.0
    assert third["solve_rate_bins"]["below band"] == 1 and third["student_format"] == 0.5


def test_report_on_a_run_in_progress(short_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(short_run, run)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "pool_si')  # a step being written right now
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    assert "2 steps logged" in (tmp_path / "r" / "index.html").read_text()
