from PIL import Image

from selfplay.cli import main

FIGURES = ["solve_rates.png", "fractions.png", "pool.png", "rewards.png", "concepts.png", "embedding_map.png"]


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


def test_report_on_a_run_in_progress(short_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(short_run, run)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "pool_si')  # a step being written right now
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    assert "2 steps logged" in (tmp_path / "r" / "index.html").read_text()
