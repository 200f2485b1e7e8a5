"""The `selfplay` command: run, eval, export, report, seeds check."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from selfplay import __version__


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    from selfplay.config import parse_config
    from selfplay.loop import run

    config = parse_config(args.config, rest)
    saved = Path(config.output_dir) / "config.yaml"
    if args.resume and args.config is None and saved.is_file():
        config = parse_config(str(saved), rest)  # resume with the run's own settings; flags still override
    run_dir = run(config, resume=args.resume)
    print(f"run directory: {run_dir}")
    return 0


def _seeds_check(args: argparse.Namespace, rest: list[str]) -> int:
    from selfplay.curriculum.seeds import check_seeds

    seeds, issues = check_seeds(args.file, args.problem_field, args.answer_field)
    for issue in issues:
        print(f"{args.file}:{issue.line}: {issue.reason}")
    print(f"{len(seeds)} good problem(s), {len(issues)} bad line(s)")
    return 1 if issues else 0


def _export(args: argparse.Namespace, rest: list[str]) -> int:
    from selfplay.curriculum.export import ExportFilters, export

    filters = ExportFilters(
        min_solve_rate=args.min_solve_rate, max_solve_rate=args.max_solve_rate, min_novelty=args.min_novelty,
        min_step=args.min_step, max_step=args.max_step, valid_only=not args.include_invalid,
        dedup_threshold=args.dedup_threshold, limit=args.limit,
    )
    summary = export(args.run_dir, args.out, args.format, args.shape, filters)
    print(f"exported {summary.rows} problem(s) to {args.out}")
    if args.push_to_hub:
        import datasets

        if args.format != "hf":
            raise SystemExit("selfplay: error: --push-to-hub needs --format hf")
        datasets.load_from_disk(args.out).push_to_hub(args.push_to_hub)
        print(f"pushed to the hub as {args.push_to_hub}")
    return 0


def _eval(args: argparse.Namespace, rest: list[str]) -> int:
    from selfplay.eval.evaluate import EvalSettings, run_eval

    settings = EvalSettings(
        benchmarks=args.bench, n=args.n, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
        benchmarks_dir=args.benchmarks_dir, question_field=args.question_field, answer_field=args.answer_field,
        template=args.template,
    )
    run_eval(args.model, settings, args.out, compare=args.compare)
    print((Path(args.out) / "results.md").read_text())
    return 0


def _report(args: argparse.Namespace, rest: list[str]) -> int:
    from selfplay.curriculum.report import write_report

    print(f"report: {write_report(args.run_dir, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfplay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"selfplay {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run self-play", description="Run self-play. Every config key is also a flag: --max-steps 3, "
        "--student-samples 8, ... (see `selfplay run --config FILE --help-config`).",
    )
    run.add_argument("--config", help="YAML config file; flags override its keys")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --output-dir from its last checkpoint (with its saved config.yaml unless --config is given)")
    run.set_defaults(handler=_run, passthrough=True)

    export = commands.add_parser("export", help="export a run's curriculum as a dataset")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["jsonl", "parquet", "hf"], default="jsonl")
    export.add_argument("--shape", choices=["rl", "sft"], default="rl",
                        help="rl: problem + reference answer + stats; sft: problem + a verified solution as chat messages")
    export.add_argument("--out", required=True, help="output file (jsonl, parquet) or folder (hf)")
    export.add_argument("--min-solve-rate", type=float, help="default: the run's band_low")
    export.add_argument("--max-solve-rate", type=float, help="default: the run's band_high")
    export.add_argument("--min-novelty", type=float)
    export.add_argument("--min-step", type=int)
    export.add_argument("--max-step", type=int)
    export.add_argument("--include-invalid", action="store_true", help="keep problems the parser rejected")
    export.add_argument("--dedup-threshold", type=float, help="drop problems this similar (cosine) to an earlier one")
    export.add_argument("--limit", type=int)
    export.add_argument("--push-to-hub", metavar="REPO", help="also push the hf folder to the Hugging Face Hub")
    export.set_defaults(handler=_export, passthrough=False)

    evaluate = commands.add_parser("eval", help="evaluate a model (or compare two) on benchmarks")
    evaluate.add_argument("--model", required=True, help="'embedded', a hub id, a folder, a run dir or a checkpoint")
    evaluate.add_argument("--compare", help="a second model, evaluated side by side with --model as the base")
    evaluate.add_argument("--bench", required=True,
                          help="comma-separated: gsm8k, math500, minerva_math, olympiadbench, aime24, aime25, amc23, "
                               "mawps (= its four sets) or mawps_singleop..., or a file / hub dataset id")
    evaluate.add_argument("--n", type=int, default=4, help="samples per problem")
    evaluate.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    evaluate.add_argument("--top-p", type=float, default=0.95)
    evaluate.add_argument("--max-new-tokens", type=int, default=512)
    evaluate.add_argument("--limit", type=int, help="first N problems of each benchmark")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--benchmarks-dir", default="../shared/benchmarks")
    evaluate.add_argument("--question-field")
    evaluate.add_argument("--answer-field")
    evaluate.add_argument("--template", default="prompts/student.yaml")
    evaluate.add_argument("--out", required=True)
    evaluate.set_defaults(handler=_eval, passthrough=False)

    report = commands.add_parser("report", help="write an HTML report with figures for a run")
    report.add_argument("run_dir")
    report.add_argument("--out", required=True)
    report.set_defaults(handler=_report, passthrough=False)

    seeds = commands.add_parser("seeds", help="seed set tools").add_subparsers(dest="seeds_command", required=True)
    check = seeds.add_parser("check", help="validate a seed set and report every bad line")
    check.add_argument("file")
    check.add_argument("--problem-field", default="problem")
    check.add_argument("--answer-field", default="answer")
    check.set_defaults(handler=_seeds_check, passthrough=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from selfplay.config import ConfigError
    from selfplay.curriculum.rundir import RunDirError
    from selfplay.curriculum.seeds import SeedError
    from selfplay.loop import RunStalled
    from selfplay.policy import ModelNotFoundError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not args.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args, rest)
    except (ConfigError, SeedError, RunDirError, ModelNotFoundError, RunStalled, FileNotFoundError) as error:
        print(f"selfplay: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfplay: interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
