"""The evaluator on the real embedded model (tiny sizes): fields and files, never model skill."""

import json
from pathlib import Path

import pytest

from selfplay.cli import main
from selfplay.files import read_jsonl
from selfplay.eval.benchmarks import resolve_benchmarks_dir
from selfplay.policy import engine_dtype
from selfplay.runner import run

pytestmark = pytest.mark.skipif(not resolve_benchmarks_dir("../shared/benchmarks").exists(),
                                reason="shared/benchmarks is not beside this checkout")


def test_eval_embedded_on_mawps_and_compare_a_run_checkpoint_and_itself(short_run, tmp_path):
    out = tmp_path / "results"
    code = main(["eval", "--model", "embedded", "--compare", str(short_run), "embedded",
                 "--bench", "mawps_singleop,mawps_addsub", "--n", "2", "--limit", "3", "--max-new-tokens", "40",
                 "--out", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in (out / "per_problem.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 3  # models x benchmarks x problems
    for row in rows:
        assert {"model", "benchmark", "id", "prompt", "gold", "samples", "answers", "correct", "majority_correct"} <= set(row)
        assert len(row["samples"]) == len(row["answers"]) == len(row["correct"]) == 2
        assert all(isinstance(c, bool) for c in row["correct"])
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["vllm_dtype"] == engine_dtype("auto") != "auto"  # the dtype that ran, not the option
    assert [m["model"] for m in results["models"]] == ["embedded", str(short_run), "embedded"]
    summary = results["models"][0]["benchmarks"]["mawps_singleop"]
    assert summary["problems"] == 3 and summary["n"] == 2
    assert {"mean@2", "mean@2_ci95", "pass@1", "pass@2", "maj@2"} <= set(summary)
    assert summary["pass@1"] == pytest.approx(summary["mean@2"])
    assert 0.0 <= summary["mean@2"] <= summary["pass@2"] <= 1.0
    run_vs_base, base_vs_itself = results["comparisons"]
    assert run_vs_base["model"] == str(short_run)
    assert {"mean@2_difference", "difference_ci95", "expansion_rate"} <= set(run_vs_base["benchmarks"]["mawps_addsub"])
    low, high = run_vs_base["macro"]["difference_ci95"]
    assert low <= run_vs_base["macro"]["mean@2_difference"] <= high
    # the same model with the same seed samples the same solutions: no difference, and an interval of width 0
    assert base_vs_itself["macro"] == {"mean@2_difference": 0.0, "difference_ci95": [0.0, 0.0],
                                       "lenient_mean@2_difference": 0.0, "lenient_difference_ci95": [0.0, 0.0]}
    # the lenient (format-independent) figure counts every strictly correct sample, and more
    for row in rows:
        assert len(row["lenient_correct"]) == 2 and all(l or not c for c, l in zip(row["correct"], row["lenient_correct"]))
    assert summary["lenient_mean@2"] >= summary["mean@2"]
    table = (out / "results.md").read_text()
    assert "| mawps_singleop | embedded | 3 |" in table and "expansion rate" in table and "lenient difference" in table
    assert f"| macro average | {short_run} |" in table


def test_in_run_evaluation_is_logged_each_eval_step(tiny_config):
    config = tiny_config(max_steps=1, eval_every=1, eval_benchmark="mawps_singleop", eval_limit=2, eval_samples=2,
                         eval_max_new_tokens=24)
    run_dir = run(config, progress=False)
    metrics = list(read_jsonl(Path(run_dir) / "metrics.jsonl"))
    assert 0.0 <= metrics[0]["eval/mawps_singleop/mean@2"] <= metrics[0]["eval/mawps_singleop/pass@2"] <= 1.0
    assert metrics[0]["time/eval"] > 0
    assert main(["report", str(run_dir), "--out", str(Path(run_dir) / "report")]) == 0
    assert 'src="heldout.png"' in (Path(run_dir) / "report" / "index.html").read_text()


def test_a_stopped_evaluation_run_again_redoes_only_what_is_missing(tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "What is 4 - 1?", "answer": "3"}\n')
    second.write_text('{"question": "What is 6 / 2?"}\n')  # no answer field: the evaluation stops at this set
    out = tmp_path / "results"
    args = ["eval", "--model", "embedded", "--bench", f"{first},{second}", "--question-field", "question",
            "--answer-field", "answer", "--n", "2", "--max-new-tokens", "16", "--generation-backend", "transformers",
            "--out", str(out)]
    assert main(args) == 2
    [part] = (out / "parts").glob("*-first.jsonl")
    finished = [json.loads(line) for line in part.read_text().splitlines()]
    assert len(finished) == 2 and not (out / "results.json").exists()
    finished[0]["samples"][0] = "read back, not sampled again"
    part.write_text("".join(json.dumps(row) + "\n" for row in finished))
    second.write_text('{"question": "What is 6 / 2?", "answer": "3"}\n')
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "per_problem.jsonl").read_text().splitlines()]
    assert [row["benchmark"] for row in rows] == ["first", "first", "second"]
    assert rows[0]["samples"][0] == "read back, not sampled again"
    # a later command that adds a model to the same folder evaluates only what it has not seen (here: nothing)
    assert main([*args, "--compare", "embedded"]) == 0
    rows = [json.loads(line) for line in (out / "per_problem.jsonl").read_text().splitlines()]
    assert [row["samples"][0] for row in rows if row["benchmark"] == "first"][::2] == ["read back, not sampled again"] * 2


def test_a_kept_adapter_is_the_runs_final_policy_in_bfloat16(short_run, tmp_path):
    """experiments/keep_adapter.py: the run's newest adapter, half the size, read back as a checkpoint."""
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    from selfplay.policy import load_policy
    from selfplay.rundir import find_checkpoint

    kept = tmp_path / "kept"
    done = subprocess.run([sys.executable, "experiments/keep_adapter.py", str(short_run), str(kept)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["step"] == 2
    weights = load_file(kept / "adapter" / "adapter_model.safetensors")
    trained = load_file(find_checkpoint(short_run).adapter_dir / "adapter_model.safetensors")
    assert weights.keys() == trained.keys()
    assert all(torch.equal(weights[name], trained[name].to(torch.bfloat16)) for name in trained)
    model, _ = load_policy(str(kept), dtype="float32")  # read back as a checkpoint, merged into its base
    reference, _ = load_policy(str(short_run), dtype="float32")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-2)
