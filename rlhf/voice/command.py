"""`rlhf voice check SPEC FILE` and `rlhf voice pairs SPEC LOGS --out DIR`: the brand-voice command line.

Exit codes as in `rlhf.cli`: 0 success; 2 the input was refused (spec, data file), with one `error:` line naming
the file, row and field or the spec key to change.
"""

from __future__ import annotations

import argparse
import sys

from rlhf.data.readers import DataError
from rlhf.recipe import RecipeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `check` and `pairs` sub-commands to the `rlhf voice` parser."""
    commands = parser.add_subparsers(dest="voice_command", required=True)
    check = commands.add_parser("check", help="score a file of replies against a voice spec")
    check.add_argument("spec", help="voice spec YAML (e.g. recipes/brand_voice/voice.yaml)")
    check.add_argument("file", help="replies: .jsonl, .json, .csv or .parquet with a prompt and a reply column")
    check.add_argument("--prompt-column", default="prompt", help="the customer-message column (default: prompt)")
    check.add_argument("--reply-column", default="reply", help="the reply column (default: reply)")
    check.add_argument("--worst", type=int, default=5, help="how many of the lowest replies to list (default: 5)")
    check.add_argument("--html", metavar="OUT", help="also write a self-contained HTML report to OUT")


def run(args: argparse.Namespace) -> int:
    """Runs the `rlhf voice` sub-command parsed by `add_arguments`; returns the exit code."""
    from rlhf.voice.scorer import load_scorer

    try:
        scorer = load_scorer(args.spec)
        if args.voice_command == "check":
            return _check(scorer, args)
    except (RecipeError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled voice command {args.voice_command}")


def _check(scorer, args: argparse.Namespace) -> int:
    from rlhf.voice.check import check_file, format_report, write_html

    report = check_file(scorer, args.file, args.prompt_column, args.reply_column)
    print(format_report(report, args.worst))
    if args.html:
        print(f"report: {write_html(report, args.html, args.worst)}")
    return 0
