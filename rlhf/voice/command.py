"""`rlhf voice check SPEC FILE` and `rlhf voice pairs SPEC LOGS --out DIR`: the brand-voice command line.

Exit codes as in `rlhf.cli`: 0 success; 2 the input was refused (spec, data file), with one `error:` line naming
the file, row and field or the spec key to change.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from rlhf.config import LogColumns, PairsOptions
from rlhf.data.readers import DataError
from rlhf.recipe import RecipeError
from rlhf.voice.scorer import VoiceScorer, load_scorer


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

    pairs = commands.add_parser("pairs", help="turn support logs into sft, preference and prompt files")
    pairs.add_argument("spec", help="voice spec YAML that labels the replies")
    pairs.add_argument("logs", help="support logs: .jsonl, .json, .csv or .parquet, one message and reply per row")
    pairs.add_argument("--out", required=True, help="directory for the data files and summary.json")
    defaults = LogColumns()
    for name in ("message", "reply", "thread", "customer", "timestamp", "agent"):
        default = getattr(defaults, name)
        pairs.add_argument(f"--{name}-column", default=default, help=f"the {name} column (default: {default})")
    pairs.add_argument(
        "--split-by",
        choices=("customer", "thread", "row"),
        default="customer",
        help="keep each customer's (or thread's) rows in one split (default: customer)",
    )
    pairs.add_argument("--by-time", action="store_true", help="hold out the newest groups (needs the timestamp)")
    options = PairsOptions()
    pairs.add_argument("--eval-share", type=float, default=options.eval_share, help="share of rows for sft/prefs eval")
    pairs.add_argument(
        "--held-out-share", type=float, default=options.held_out_share, help="share of rows held out as eval prompts"
    )
    pairs.add_argument(
        "--min-similarity",
        type=float,
        default=options.min_similarity,
        help="word overlap (Jaccard) for pairing an off-voice log reply with an on-voice reply to a similar message",
    )
    pairs.add_argument("--seed", type=int, default=options.seed, help="seed of the split (default: 0)")
    pairs.add_argument("--no-scrub", action="store_true", help="keep PII (only for logs already scrubbed)")


def run(args: argparse.Namespace) -> int:
    """Runs the `rlhf voice` sub-command parsed by `add_arguments`; returns the exit code."""
    try:
        scorer = load_scorer(args.spec)
        if args.voice_command == "check":
            return _check(scorer, args)
        if args.voice_command == "pairs":
            return _pairs(scorer, args)
    except (RecipeError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled voice command {args.voice_command}")


def _check(scorer: VoiceScorer, args: argparse.Namespace) -> int:
    from rlhf.voice.check import check_file, format_report, write_html

    report = check_file(scorer, args.file, args.prompt_column, args.reply_column)
    print(format_report(report, args.worst))
    if args.html:
        print(f"report: {write_html(report, args.html, args.worst)}")
    return 0


def _pairs(scorer: VoiceScorer, args: argparse.Namespace) -> int:
    from rlhf.voice.pairs import make_pairs, needed_columns, read_logs, summary_lines

    columns = LogColumns(
        message=args.message_column,
        reply=args.reply_column,
        thread=args.thread_column,
        customer=args.customer_column,
        timestamp=args.timestamp_column,
        agent=args.agent_column,
    )
    try:
        options = PairsOptions(
            split_by=args.split_by,
            by_time=args.by_time,
            eval_share=args.eval_share,
            held_out_share=args.held_out_share,
            scrub=not args.no_scrub,
            min_similarity=args.min_similarity,
            seed=args.seed,
        )
    except ValidationError as err:
        first = err.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "options"
        raise RecipeError(f"{option}: {first['msg']}") from None
    summary = make_pairs(scorer, read_logs(args.logs, columns, needed_columns(options)), args.out, options)
    print("\n".join(summary_lines(summary, args.logs, args.out, options)))
    return 0
