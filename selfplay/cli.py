"""The `selfplay` command: run, eval, export, report, seeds check."""

from __future__ import annotations

import argparse
import logging
import sys

from selfplay import __version__


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    from selfplay.config import parse_config
    from selfplay.loop import run

    config = parse_config(args.config, rest)
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
    run.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    run.set_defaults(handler=_run, passthrough=True)

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
    except (ConfigError, SeedError, RunDirError, ModelNotFoundError, RunStalled) as error:
        print(f"selfplay: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfplay: interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
