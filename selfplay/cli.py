"""The `selfplay` command: run, eval, export, report, seeds check.

`run`, `eval` and `export` take their flags from dataclasses (`SelfPlayConfig`, `EvalSettings` and `EvalCommand`,
`ExportFilters` and `ExportTarget`), so `--help` shows every setting with its help and default, and each
default lives once, in its dataclass.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from selfplay import __version__, logs

RUN_DESCRIPTION = ("Run self-play. Every config key is a flag (--max-steps 3, --student-samples 8, ...) and a YAML "
                   "key of --config; flags override the file.")


@dataclass
class EvalCommand:
    model: str = field(metadata={"help": "'embedded', a hub id, a folder, a run directory or a checkpoint."})
    out: str = field(metadata={"help": "Output folder (per_problem.jsonl, results.json, results.md)."})
    compare: list[str] = field(default_factory=list, metadata={
        "help": "Models compared with --model as the base, each by paired bootstrap (the base is evaluated once)."})


def _run(rest: list[str]) -> int:
    from selfplay.config import SelfPlayConfig, parse_config, settings_parser
    from selfplay.rundir import CONFIG
    from selfplay.runner import run

    parser = settings_parser(SelfPlayConfig, prog="selfplay run", description=RUN_DESCRIPTION)
    parser.add_argument("--config", help="YAML config file; flags override its keys")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last "
                        "checkpoint (with its saved config.yaml unless --config is given)")
    parser.add_argument("--num-processes", type=int, default=1, help="run N data-parallel processes on this machine, "
                        "launched through accelerate (one GPU each; without CUDA, CPU processes over gloo)")
    options, _ = parser.parse_known_args(rest)  # --help prints every setting and exits here
    if options.num_processes > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(options.num_processes, rest)
    config_file = options.config
    saved = Path(options.output_dir) / CONFIG
    if options.resume and config_file is None and saved.is_file():
        config_file = str(saved)  # resume with the run's own settings; flags still override
    run_dir = run(parse_config(config_file, rest, parser), resume=options.resume)
    if os.environ.get("RANK", "0") == "0":  # one line for a multi-process run
        print(f"run directory: {run_dir}")
    return 0


def _launch(processes: int, rest: list[str]) -> int:
    """`selfplay run` again under `accelerate launch` with `processes` processes (--num-processes removed)."""
    import subprocess

    kept = []
    for arg, before in zip(rest, [None, *rest]):
        if arg != "--num-processes" and before != "--num-processes" and not arg.startswith("--num-processes="):
            kept.append(arg)
    # --multi_gpu is accelerate's multi-process launcher (torchrun); its --cpu flag starts a single process.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "selfplay", "run", *kept]
    return subprocess.run(command).returncode


def _eval(rest: list[str]) -> int:
    from selfplay.config import settings_parser
    from selfplay.eval.evaluate import EvalSettings, run_eval

    parser = settings_parser(EvalCommand, EvalSettings, prog="selfplay eval",
                             description="Evaluate a model (or compare others with it) on benchmarks.")
    command, settings = parser.parse_args_into_dataclasses(rest)
    run_eval(command.model, settings, command.out, compare=command.compare)
    print((Path(command.out) / "results.md").read_text())
    return 0


def _serve(rest: list[str]) -> int:
    """`vllm serve` with a run's model and engine settings, where its vllm_server_url says, for
    generation_backend: vllm-server (the command and its environment: vllm_server.serve_command)."""
    from urllib.parse import urlparse

    from selfplay.config import SelfPlayConfig, parse_config, settings_parser
    from selfplay.policy import resolve_model
    from selfplay.policy.vllm_server import serve_command

    parser = settings_parser(SelfPlayConfig, prog="selfplay serve",
                             description="Start the vLLM server a run with generation_backend vllm-server uses, "
                                         "with the run's model and engine settings, at its vllm_server_url.")
    parser.add_argument("--config", help="the run's YAML config file; flags override its keys")
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    options, _ = parser.parse_known_args(rest)
    config = parse_config(options.config, [a for a in rest if a != "--print"], parser)
    url = urlparse(config.vllm_server_url)
    argv, environment = serve_command(config, resolve_model(config.model), config.seed, url.hostname or "127.0.0.1",
                                      url.port or 8000)
    if options.print:
        print(" ".join(argv))
        return 0
    os.execvpe(argv[0], argv, environment)  # the server takes this process over (signals, exit code)


def _export(rest: list[str]) -> int:
    from selfplay.config import settings_parser
    from selfplay.curriculum.export import ExportFilters, ExportTarget, export

    parser = settings_parser(ExportTarget, ExportFilters, prog="selfplay export",
                             description="Export a run's curriculum as a dataset.")
    parser.add_argument("run_dir", help="the run directory")
    command, filters, extra = parser.parse_args_into_dataclasses(rest)
    if command.push_to_hub and command.format != "hf":
        parser.error("--push-to-hub needs --format hf")
    summary = export(extra.run_dir, command.out, command.format, command.shape, filters)
    print(f"exported {summary.rows} problem(s) to {command.out}")
    if command.push_to_hub:
        import datasets

        datasets.load_from_disk(command.out).push_to_hub(command.push_to_hub)
        print(f"pushed to the hub as {command.push_to_hub}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from selfplay.curriculum.report import write_report

    print(f"report: {write_report(args.run_dir, args.out)}")
    return 0


def _seeds_check(args: argparse.Namespace) -> int:
    from selfplay.curriculum.seeds import check_seeds

    seeds, issues = check_seeds(args.file, args.problem_field, args.answer_field)
    for issue in issues:
        print(f"{args.file}:{issue.line}: {issue.reason}")
    print(f"{len(seeds)} good problem(s), {len(issues)} bad line(s)")
    return 1 if issues else 0


def build_parser() -> argparse.ArgumentParser:
    from selfplay.config import SelfPlayConfig

    parser = argparse.ArgumentParser(prog="selfplay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"selfplay {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    # These three parse their own flags (see the handlers), --help included.
    for name, handler, summary in ((("run", _run, "run self-play (--help lists every setting)")),
                                   ("serve", _serve, "start the vLLM server of a run with generation_backend "
                                                     "vllm-server"),
                                   ("eval", _eval, "evaluate a model (or compare others with it) on benchmarks"),
                                   ("export", _export, "export a run's curriculum as a dataset")):
        commands.add_parser(name, help=summary, add_help=False).set_defaults(own_flags=handler)

    report = commands.add_parser("report", help="write an HTML report with figures for a run")
    report.add_argument("run_dir")
    report.add_argument("--out", required=True)
    report.set_defaults(handler=_report)

    seeds = commands.add_parser("seeds", help="seed set tools").add_subparsers(dest="seeds_command", required=True)
    check = seeds.add_parser("check", help="validate a seed set and report every bad line")
    check.add_argument("file")
    check.add_argument("--problem-field", default=SelfPlayConfig.seed_problem_field)
    check.add_argument("--answer-field", default=SelfPlayConfig.seed_answer_field)
    check.set_defaults(handler=_seeds_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    from selfplay.errors import SelfPlayError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    own_flags = getattr(args, "own_flags", None)
    if rest and own_flags is None:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logs.configure(args.log_level)
    try:
        return own_flags(rest) if own_flags is not None else args.handler(args)
    except SelfPlayError as error:
        print(f"selfplay: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfplay: interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
