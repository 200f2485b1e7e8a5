"""The known-answer probe: its figures on hand-made judged problems, and the shipped probe set."""

import json
from pathlib import Path

import pytest

from selfplay.config import BENCHMARKS_DIR, PROBE_FILE
from selfplay.curriculum.probe import ProbeJudged, load_probe, probe_figures, write_problems
from selfplay.curriculum.seeds import SeedError

ROOT = Path(__file__).resolve().parent.parent


def judged(reference_right, band, right, rewarded):
    return ProbeJudged(reference_right, band, tuple(right), tuple(rewarded))


def test_a_group_that_agrees_on_a_wrong_answer_lowers_label_accuracy_and_precision():
    right_group = judged(True, True, [1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0])
    agreed_wrong = judged(False, True, [0] * 8, [1, 1, 1, 1, 1, 1, 0, 0])
    figures = probe_figures([right_group, agreed_wrong])
    assert figures["label_accuracy"] == figures["in_band_label_accuracy"] == 0.5
    assert figures["reward_precision"] == pytest.approx(5 / 11)
    assert figures["reward_recall"] == 1.0  # every right solution was rewarded
    assert figures["student_accuracy"] == pytest.approx(5 / 16)
    assert probe_figures([right_group])["reward_precision"] == 1.0


def test_a_right_minority_raises_nothing():
    """3 of 8 right, the wrong majority rewarded: label accuracy, precision and recall all 0."""
    minority = judged(False, True, [1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1])
    figures = probe_figures([minority])
    assert (figures["label_accuracy"], figures["reward_precision"], figures["reward_recall"]) == (0.0, 0.0, 0.0)
    assert figures["student_accuracy"] == 3 / 8


def test_problems_without_a_reference_or_outside_the_band_are_counted_where_they_belong():
    no_reference = judged(None, False, [0] * 4, [0] * 4)
    out_of_band = judged(True, False, [1] * 4, [1] * 4)
    in_band_wrong = judged(False, True, [0] * 4, [1] * 4)
    figures = probe_figures([no_reference, out_of_band, in_band_wrong])
    assert figures["label_accuracy"] == 0.5  # of the two with a reference
    assert figures["in_band_label_accuracy"] == 0.0 and figures["in_band_problems"] == 1
    assert probe_figures([no_reference])["label_accuracy"] is None  # nothing to measure, not 0


def test_the_shipped_probe_is_the_generators_output_with_exact_answers():
    shipped = [json.loads(line) for line in (ROOT / PROBE_FILE).read_text().splitlines()]
    assert shipped == [{"problem": p.problem, "answer": p.answer} for p in write_problems()]
    assert len(shipped) >= 200 and len({p["problem"] for p in shipped}) == len(shipped)
    assert all(p["answer"].isdigit() and int(p["answer"]) > 0 for p in shipped)
    assert write_problems(20, seed=1) == write_problems(20, seed=1) != write_problems(20, seed=2)


def test_the_shipped_probe_shares_no_problem_with_any_benchmark():
    folder = ROOT / BENCHMARKS_DIR
    if not folder.is_dir():
        pytest.skip(f"no benchmarks at {folder}")

    def words(text: str) -> str:
        return " ".join(str(text).lower().split())

    probe = {words(p.problem) for p in write_problems()}
    for path in folder.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            text = row.get("input") or row.get("question") or row.get("problem") or ""
            assert words(text) not in probe, path


def test_a_probe_problem_without_an_answer_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "probe.jsonl"
    path.write_text('{"problem": "Ann has 3 bags of 4 apples. How many?", "answer": "12"}\n'
                    '{"problem": "Ben has 2 pens and 5 more. How many?"}\n')
    with pytest.raises(SeedError, match=r"probe.jsonl:2: no answer"):
        load_probe(str(path))
