"""Evaluate a policy on benchmarks with the student prompt and the guarded math-verify checker."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from selfplay.config import BENCHMARKS_DIR, EVAL_TEMPERATURE, EVAL_TOP_P, STUDENT_TEMPLATE, GenerationSettings
from selfplay.eval.benchmarks import Item, expand, load_benchmark, resolve_benchmarks_dir, slug
from selfplay.files import atomic_write, read_jsonl
from selfplay.eval.metrics import bootstrap_ci, expansion_rate, macro_bootstrap_ci, majority_correct, summarize
from selfplay.policy import Sampling, engine_dtype, engine_path, load_policy, make_backend, render_chat
from selfplay.roles import PromptTemplate
from selfplay.rundir import find_checkpoint
from selfplay.verify import Verifier, extract_final_answer
from selfplay.verify.answers import lenient_answer


@dataclass
class ProblemResult:
    benchmark: str
    id: str
    prompt: str
    gold: str
    samples: list[str]
    answers: list[str | None]
    correct: list[bool]
    majority_correct: bool
    # format-independent: each sample's lenient answer (`lenient_answer`: its strict one, else its last number)
    lenient_correct: list[bool] = field(default_factory=list)


def evaluate_items(
    benchmark: str, items: list[Item], backend, tokenizer, template: PromptTemplate, verifier: Verifier,
    n: int, max_new_tokens: int, progress: bool = False, sampling: Sampling | None = None,
) -> list[ProblemResult]:
    """`sampling` overrides the backend's own (in-run evaluation shares the training backend)."""
    from tqdm import tqdm

    prompts = [template.messages(problem=item.question) for item in items]
    token_ids = [render_chat(tokenizer, p) for p in prompts]
    # Problems in chunks that fill one generation batch, so the progress bar moves as batches finish.
    chunk = max(1, backend.batch_size // n)
    groups = []
    with tqdm(total=len(items), desc=benchmark, unit="problem", disable=not progress) as bar:
        for start in range(0, len(items), chunk):
            groups += backend.generate(token_ids[start : start + chunk], n, max_new_tokens, sampling)
            bar.update(len(token_ids[start : start + chunk]))
    answers = [[extract_final_answer(s.text) for s in group] for group in groups]
    lenient = [[lenient_answer(s.text) for s in group] for group in groups]
    pairs = list(dict.fromkeys((item.answer, a) for rows in (answers, lenient) for item, row in zip(items, rows)
                               for a in row if a is not None))
    verdicts = dict(zip(pairs, verifier.equal_many(pairs))) if pairs else {}
    results = []
    for item, prompt, group, row, loose in zip(items, prompts, groups, answers, lenient):
        correct = [a is not None and verdicts[(item.answer, a)] for a in row]
        results.append(ProblemResult(
            benchmark, item.id, prompt[-1]["content"], item.answer, [s.text for s in group], row, correct,
            majority_correct(verifier.cluster(row), correct),
            [a is not None and verdicts[(item.answer, a)] for a in loose],
        ))
    return results


def benchmark_summary(results: list[ProblemResult], seed: int = 0) -> dict:
    """The strict figures (`summarize`), and the format-independent mean@n with its interval."""
    summary = summarize([r.correct for r in results], [r.majority_correct for r in results], seed=seed)
    n = summary["n"]
    if results and all(r.lenient_correct for r in results):
        lenient = [sum(r.lenient_correct) / n for r in results]
        summary |= {f"lenient_mean@{n}": float(np.mean(lenient)), f"lenient_mean@{n}_ci95": bootstrap_ci(lenient, seed=seed)}
    return summary


@dataclass(kw_only=True)
class EvalSettings(GenerationSettings):
    bench: str = field(metadata={"help": "Comma-separated: gsm8k, math500, minerva_math, olympiadbench, aime24, "
                                         "aime25, amc23, mawps (its four sets) or mawps_singleop..., or a file or hub "
                                         "dataset id (with --question-field and --answer-field)."})
    n: int = field(default=4, metadata={"help": "Samples per problem."})
    temperature: float = field(default=EVAL_TEMPERATURE, metadata={"help": "Sampling temperature; 0 = greedy."})
    top_p: float = field(default=EVAL_TOP_P, metadata={"help": "Nucleus sampling threshold."})
    max_new_tokens: int = field(default=512, metadata={"help": "Token limit of a solution."})
    limit: int | None = field(default=None, metadata={"help": "First N problems of each benchmark."})
    batch_size: int = field(default=32, metadata={"help": "Most sequences in one generate call."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling and the bootstrap."})
    benchmarks_dir: str = field(default=BENCHMARKS_DIR, metadata={"help": "Folder of the standard sets."})
    question_field: str | None = field(default=None, metadata={"help": "Question column of a custom benchmark."})
    answer_field: str | None = field(default=None, metadata={"help": "Answer column of a custom benchmark."})
    template: str = field(default=STUDENT_TEMPLATE, metadata={"help": "Student prompt file."})
    verify_timeout: float = field(default=5.0, metadata={"help": "Wall-clock seconds per answer check."})


def model_identity(spec: str) -> str:
    """What a model spec evaluates: for a run directory its newest checkpoint (a run that trained on gives new
    results), for a folder its absolute path, else the spec itself (`embedded`, a hub id)."""
    checkpoint = find_checkpoint(spec)
    if checkpoint is not None:
        return str(checkpoint.path.resolve())
    return str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec


class ResultParts:
    """Each finished (model, benchmark) result, kept as a file under `out/parts/` named by a digest of the model
    (`model_identity`) and the settings. An evaluation stopped part-way (a kill, a malformed benchmark file), run
    again, redoes only what is missing; one that adds a model to the same `out` evaluates only that model."""

    def __init__(self, folder: Path, settings: EvalSettings):
        self.folder = folder
        # the benchmark is in each file's name, so `--bench mawps` reuses a `--bench mawps_singleop` result
        self.settings = json.dumps({k: v for k, v in asdict(settings).items() if k != "bench"}, sort_keys=True)

    def _path(self, spec: str, bench: str) -> Path:
        digest = hashlib.sha256(f"{model_identity(spec)}\n{self.settings}".encode()).hexdigest()[:16]
        return self.folder / f"{digest}-{bench}.jsonl"

    def get(self, spec: str, bench: str) -> list[ProblemResult] | None:
        path = self._path(spec, bench)
        return [ProblemResult(**row) for row in read_jsonl(path)] if path.is_file() else None

    def put(self, spec: str, bench: str, results: list[ProblemResult]) -> None:
        atomic_write(self._path(spec, bench), "".join(json.dumps(asdict(r)) + "\n" for r in results))


def evaluate_model(model_spec: str, settings: EvalSettings, verifier: Verifier,
                   parts: ResultParts) -> dict[str, list[ProblemResult]]:
    """Each benchmark of `settings.bench` on one model; finished parts are read back, and the model is loaded
    only if a benchmark is left to do."""
    import torch

    names = [slug(name) for name in expand(settings.bench)]
    results = {name: parts.get(model_spec, name) for name in names}
    todo = [name for name in expand(settings.bench) if results[slug(name)] is None]
    if not todo:
        return results
    torch.manual_seed(settings.seed)
    model, tokenizer = load_policy(model_spec)
    backend = make_backend(settings, model, tokenizer, engine_path(model_spec), settings.temperature, settings.top_p,
                           settings.batch_size, settings.seed)
    template = PromptTemplate.load(settings.template)
    try:
        for name in todo:
            items = load_benchmark(name, resolve_benchmarks_dir(settings.benchmarks_dir), settings.question_field,
                                   settings.answer_field, settings.limit)
            results[slug(name)] = evaluate_items(slug(name), items, backend, tokenizer, template, verifier, settings.n,
                                                 settings.max_new_tokens, progress=True)
            parts.put(model_spec, slug(name), results[slug(name)])
    finally:
        backend.close()
    return results


def _macro(summaries: dict[str, dict], key: str) -> float | None:
    values = [s[key] for s in summaries.values() if s.get(key) is not None]
    return float(np.mean(values)) if values else None


def comparison(base: dict[str, list[ProblemResult]], other: dict[str, list[ProblemResult]], n: int, seed: int) -> dict:
    """`other` against `base` on the same problems: per benchmark the mean@n difference with its paired bootstrap
    interval and the expansion rate; the macro difference with its interval (problems resampled within each set)."""
    diffs = {bench: [sum(o.correct) / n - sum(b.correct) / n for b, o in zip(base[bench], other[bench])]
             for bench in base}
    lenient = {bench: [sum(o.lenient_correct) / n - sum(b.lenient_correct) / n for b, o in zip(base[bench], other[bench])]
               for bench in base if all(r.lenient_correct for r in base[bench] + other[bench])}
    return {
        "benchmarks": {bench: {
            f"mean@{n}_difference": float(np.mean(d)),
            "difference_ci95": bootstrap_ci(d, seed=seed),
            "expansion_rate": expansion_rate([any(r.correct) for r in base[bench]],
                                             [any(r.correct) for r in other[bench]]),
            **({f"lenient_mean@{n}_difference": float(np.mean(lenient[bench])),
                "lenient_difference_ci95": bootstrap_ci(lenient[bench], seed=seed)} if bench in lenient else {}),
        } for bench, d in diffs.items()},
        "macro": {f"mean@{n}_difference": float(np.mean([np.mean(d) for d in diffs.values()])),
                  "difference_ci95": macro_bootstrap_ci(list(diffs.values()), seed=seed),
                  **({f"lenient_mean@{n}_difference": float(np.mean([np.mean(d) for d in lenient.values()])),
                      "lenient_difference_ci95": macro_bootstrap_ci(list(lenient.values()), seed=seed)}
                     if len(lenient) == len(diffs) else {})},
    }


def run_eval(model: str, settings: EvalSettings, out: str | Path, compare: Sequence[str] = ()) -> dict:
    """Evaluate `model`, and each of `compare` against it as the base (the base is evaluated once); write
    per_problem.jsonl, results.json (`models`: base first; `comparisons`: one per compared model), results.md.
    Finished (model, benchmark) results are kept and reused (`ResultParts`)."""
    out = Path(out)
    specs = [model, *compare]
    settings = replace(settings, vllm_dtype=engine_dtype(settings.vllm_dtype))  # results name the dtype that ran
    parts = ResultParts(out / "parts", settings)
    with Verifier(settings.verify_timeout) as verifier:
        per_model = [evaluate_model(spec, settings, verifier, parts) for spec in specs]
    lines = [json.dumps({"model": spec, **asdict(r)}, ensure_ascii=False)
             for spec, by_bench in zip(specs, per_model) for results in by_bench.values() for r in results]
    atomic_write(out / "per_problem.jsonl", "\n".join(lines) + "\n")
    n = settings.n
    models = []
    for spec, by_bench in zip(specs, per_model):
        summaries = {bench: benchmark_summary(results, settings.seed) for bench, results in by_bench.items()}
        models.append({"model": spec, "benchmarks": summaries, "macro": {
            k: _macro(summaries, k) for k in (f"mean@{n}", f"pass@{n}", f"maj@{n}", f"lenient_mean@{n}")}})
    report = {"settings": asdict(settings), "models": models,
              "comparisons": [{"model": spec, **comparison(per_model[0], other, n, settings.seed)}
                              for spec, other in zip(compare, per_model[1:])]}
    atomic_write(out / "results.json", json.dumps(report, indent=2))
    atomic_write(out / "results.md", markdown_table(report, n))
    return report


def markdown_table(report: dict, n: int) -> str:
    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    def interval(d):
        low, high = d["difference_ci95"]
        return f"{d[f'mean@{n}_difference']:+.3f} ({low:+.3f} to {high:+.3f})"

    def lenient_interval(d):
        if f"lenient_mean@{n}_difference" not in d:
            return "-"
        low, high = d["lenient_difference_ci95"]
        return f"{d[f'lenient_mean@{n}_difference']:+.3f} ({low:+.3f} to {high:+.3f})"

    models = report["models"]
    rows = [f"| benchmark | model | problems | mean@{n} (95% CI) | pass@1 | pass@{n} | maj@{n} | lenient mean@{n} |",
            "|---|---|---|---|---|---|---|---|"]
    for bench in models[0]["benchmarks"]:
        for entry in models:
            s = entry["benchmarks"][bench]
            low, high = s[f"mean@{n}_ci95"]
            rows.append(f"| {bench} | {entry['model']} | {s['problems']} | {fmt(s[f'mean@{n}'])} "
                        f"({fmt(low)}-{fmt(high)}) | {fmt(s['pass@1'])} | {fmt(s[f'pass@{n}'])} | {fmt(s[f'maj@{n}'])} "
                        f"| {fmt(s.get(f'lenient_mean@{n}'))} |")
    for entry in models:
        macro = entry["macro"]
        rows.append(f"| macro average | {entry['model']} | | {fmt(macro[f'mean@{n}'])} | | "
                    f"{fmt(macro[f'pass@{n}'])} | {fmt(macro[f'maj@{n}'])} | {fmt(macro.get(f'lenient_mean@{n}'))} |")
    text = "\n".join(rows) + "\n"
    text += (f"\nStrict: the answer in `\\boxed{{}}` (or after 'final answer is'); lenient: that, else the last number "
             "the completion writes (format-independent: a gain there is more answers right, not better boxing).\n")
    if report["comparisons"]:
        text += (f"\nAgainst {models[0]['model']} (paired bootstrap over problems):\n\n"
                 f"| benchmark | model | difference in mean@{n} (95% CI) | lenient difference (95% CI) | "
                 "expansion rate |\n|---|---|---|---|---|\n")
        for entry in report["comparisons"]:
            for bench, d in entry["benchmarks"].items():
                text += (f"| {bench} | {entry['model']} | {interval(d)} | {lenient_interval(d)} | "
                         f"{fmt(d['expansion_rate'])} |\n")
            text += f"| macro average | {entry['model']} | {interval(entry['macro'])} | " \
                    f"{lenient_interval(entry['macro'])} | |\n"
    return text
