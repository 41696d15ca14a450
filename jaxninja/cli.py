"""The command line: flags mapped explicitly onto the configs, then calls into the package.

Nothing else in jaxninja parses arguments. A `UsageError` anywhere below becomes one line on
stderr and exit code 2; argparse's own errors are folded into the same one-line form.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxninja.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_data_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="words file, one word per line (default: $JAXNINJA_DATA, else data/names.txt, "
        "downloaded if missing)",
    )


def _add_model_flags(p: argparse.ArgumentParser, n_hidden: int) -> None:
    p.add_argument("--block-size", type=_positive_int, default=3, help="context length (3)")
    p.add_argument("--n-embd", type=_positive_int, default=10, help="embedding size (10)")
    p.add_argument(
        "--n-hidden", type=_positive_int, default=n_hidden, help=f"hidden units ({n_hidden})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxninja",
        description="makemore part 4 in JAX: a hand-written backward, checked three ways.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("data", help="show the data set's vocabulary and splits, or download it")
    p.add_argument(
        "action",
        nargs="?",
        choices=("show", "download"),
        default="show",
        help="show (default): vocabulary and split sizes; download: fetch names.txt",
    )
    _add_data_flag(p)
    p.add_argument("--block-size", type=_positive_int, default=3, help="context length (3)")
    p.add_argument("--url", default=None, help="download from this address instead")
    p.add_argument("--force", action="store_true", help="download even if the file exists")

    p = sub.add_parser("check", help="verify the manual backward three ways; print the cmp table")
    _add_data_flag(p)
    _add_model_flags(p, n_hidden=64)
    p.add_argument("--batch-size", type=_positive_int, default=32, help="batch size (32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parameters and batch (0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    return parser


def cmd_data(args: argparse.Namespace) -> int:
    from jaxninja import data

    if args.action == "download":
        dest = data.resolve_data_path(args.data, download=False)
        if dest.exists() and not args.force:
            print(f"{dest} already exists (use --force to download again)")
            return 0
        data.download_names(dest, url=args.url)
        print(f"downloaded {dest} (SHA-256 checked)")
        return 0
    path = data.resolve_data_path(args.data)
    splits = data.load_splits(path, args.block_size)
    vocab = splits.vocab
    print(f"data: {path}")
    print(f"vocab_size: {vocab.size} ('.' + {''.join(vocab.chars)!r})")
    for name in data.SPLITS:
        X, _ = splits.data[name]
        print(f"{name:5s}: {len(splits.words[name]):6d} words, {X.shape[0]:7d} examples")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from jaxninja import data, verify
    from jaxninja.config import ModelConfig, check_batch_size

    check_batch_size(args.batch_size)
    path = data.resolve_data_path(args.data)
    splits = data.load_splits(path, args.block_size)
    cfg = ModelConfig(
        vocab_size=splits.vocab.size,
        block_size=args.block_size,
        n_embd=args.n_embd,
        n_hidden=args.n_hidden,
        dtype=args.dtype,
    )
    report = verify.run_check(
        cfg, *splits.data["train"], batch_size=args.batch_size, seed=args.seed
    )
    print(report.to_json() if args.json else verify.format_table(report))
    return 0 if report.ok else 1


COMMANDS = {"data": cmd_data, "check": cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"jaxninja: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxninja: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
