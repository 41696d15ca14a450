"""The command line's flags as a table: each command's help and flag specs, and one small loop
that turns them into argparse calls (cli.py maps the parsed flags onto the configs).

A spec is `flag(*names, **argparse_keywords)`, exactly what `add_argument` takes, so every flag
reads in one place with its type, default and help. Argparse's own errors are folded into one
line on stderr and exit code 2, like every other bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from jaxninja.config import (
    DEFAULT_LR,
    DEFAULT_TIMEOUT,
    GRADIENTS,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
    UNUSED,
    TrainConfig,
    model_config,
)
from jaxninja.errors import UsageError

Flag = tuple[tuple[str, ...], dict[str, Any]]  # add_argument's names and keywords


class Command(NamedTuple):
    help: str
    flags: list[Flag]
    groups: tuple[tuple[str, list[Flag]], ...] = ()  # (title, flags): an argument group each
    epilog: str | None = None


def flag(*names: str, **kw: Any) -> Flag:
    """One row of the table: what `add_argument(*names, **kw)` takes."""
    return names, kw


class _Again(Exception):
    """The command line failed again, parsed with every argument optional and any value."""


class _Parser(argparse.ArgumentParser):
    top: _Top | None = None  # a command's: the parser it is a command of (set by build_parser)

    def error(self, message: str) -> None:  # one line, not argparse's usage block
        """A command's error, or the flags none of the parsers knows where there are any: a
        command checks its required arguments at the end of its own parse, and would name a
        missing one before the top parser named the unknown flags."""
        unknown = self.top.unknown() if self.top else []
        self.fail(self.prog, _unrecognized(unknown) if unknown else message)

    def fail(self, prog: str, message: str) -> None:
        self.exit(2, f"{prog}: error: {message} (see {prog} --help)\n")


def _unrecognized(extra: list[str]) -> str:
    return f"unrecognized arguments: {' '.join(extra)}"


class _Top(_Parser):
    """The top parser: a flag it does not know is named (before a missing command, which
    argparse would report instead), and a missing command lists the commands."""

    commands: dict[str, _Parser]  # by name (set by build_parser)
    given: list[str] | None = None  # the command line parse_args is parsing
    again: bool = False  # parsing it again, for its unknown flags

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self.given = list(sys.argv[1:] if args is None else args)
        parsed, extra = self.parse_known_args(self.given, namespace)
        if extra and parsed.command:
            self.fail(f"{self.prog} {parsed.command}", _unrecognized(extra))
        if parsed.command is None:
            given = f"{_unrecognized(extra)}; " if extra else ""
            self.error(f"{given}give a command first: {', '.join(self.commands)}")
        return parsed

    def error(self, message: str) -> None:
        if self.again:
            raise _Again
        super().error(message)

    def unknown(self) -> list[str]:
        """The flags of the command line that no parser knows: its extras, parsed again with
        every argument optional and any value taken; none where that fails too (a flag given
        without its value, named as it is). Help, which exits, was answered in the first parse,
        before anything it could fail."""
        if self.again:  # an error while parsing again
            raise _Again
        if self.given is None:  # not parse_args': parse_known_args leaves them to the caller
            return []
        actions = [
            a for p in (self, *self.commands.values()) for a in p._actions
            if not isinstance(a, argparse._SubParsersAction)  # its choices are the commands
        ]  # fmt: skip
        kept = [(a, a.required, a.type, a.choices) for a in actions]
        for action in actions:
            action.required, action.type, action.choices = False, None, None
        self.again = True
        try:
            return self.parse_known_args(self.given)[1]
        except _Again:
            return []
        finally:
            self.again = False
            for action, *fields in kept:
                action.required, action.type, action.choices = fields


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum, else argparse's one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _exercise(text: str) -> int:
    """--exercise: 1, 2, 3, 5 or 6; 4 passes, for cmd_check to say that it is train --backward."""
    if text.strip() not in ("1", "2", "3", "4", "5", "6"):
        raise argparse.ArgumentTypeError(
            f"must be 1, 2, 3, 5 or 6, got {text!r} (exercise 4 is jaxninja train --backward)"
        )
    return int(text)


def _env_int(name: str) -> int | None:
    """An integer from the environment, for a flag's default; a bad value is a one-line error."""
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"${name} must be an integer, got {text!r}") from None


MODEL_FLAGS = {
    "block_size": "context length",
    "n_embd": "embedding size",
    "n_hidden": "hidden units",
    "n_layer": "Transformer blocks",
    "n_head": "attention heads a block (must divide n-embd)",
}
# the models a size flag means something to (config.UNUSED: the others refuse it)
FLAG_MODELS = {k: tuple(m for m in MODELS if k not in UNUSED[m]) for k in MODEL_FLAGS}


def _data_flag() -> Flag:
    return flag(
        "--data",
        default=None,
        help="words file, one word per line (default: $JAXNINJA_DATA, else data/names.txt, "
        "downloaded if missing)",
    )


def _model_choice(what: str, default: str = "mlp") -> Flag:
    return flag(
        "--model",
        choices=MODELS,
        default=None,
        help=f"{what}: mlp (part 4), wavenet (part 5) or gpt (part 6, makemore's Transformer); "
        f"default {default}",
    )


def _size_default(model: str, use: str, name: str) -> str:
    """A model's default of a size flag, for its help: the GPT's block size in training is the
    data's (makemore's longest word + 1)."""
    if (model, use, name) == ("gpt", "train", "block_size"):
        return "gpt the longest word + 1, 16 for names.txt"
    return f"{model} {getattr(model_config(model, use), name)}"


def _model_flags(use: str, names: tuple[str, ...] = tuple(MODEL_FLAGS)) -> list[Flag]:
    """The model's size flags, their help read off each model's defaults for `use` ("check" or
    "train"). A flag left out is None: the model's default, or the checkpoint's on --resume."""
    return [
        flag(
            f"--{name.replace('_', '-')}",
            type=_positive_int,
            default=None,
            help=f"{MODEL_FLAGS[name]} "
            f"({'; '.join(_size_default(m, use, name) for m in FLAG_MODELS.get(name, MODELS))})",
        )
        for name in names
    ]


def _data_command() -> Command:
    return Command(
        "show the data set's vocabulary and splits, or download it",
        [
            flag(
                "action",
                nargs="?",
                choices=("show", "download"),
                default="show",
                help="show (default): vocabulary and split sizes; download: fetch names.txt",
            ),
            _data_flag(),
            _model_choice("the model whose data to show (the gpt's: makemore's rows)"),
            *_model_flags("train", names=("block_size",)),
            flag("--url", default=None, help="download from this address instead"),
            flag("--force", action="store_true", help="download even if the file exists"),
        ],
    )


def _check_command() -> Command:
    return Command(
        "verify a model's hand-written backward three ways (or grade yours, --candidate)",
        [
            _data_flag(),
            _model_choice("the model whose backward is checked"),
            *_model_flags("check"),
            flag(
                "--batch-size",
                type=_positive_int,
                help="batch size (32; with --candidate: 32 and 5, unless given)",
            ),
            flag(
                "--seed",
                type=_nonnegative_int,
                help="seed of the parameters and batch (0; with --candidate: 0 and 1, unless "
                "given)",
            ),
            flag("--dtype", choices=("float32", "float64"), default="float32"),
            flag("--json", action="store_true", help="print the table as JSON"),
            flag(
                "--wide",
                "--all-ways",
                action="store_true",
                help="a column for every way (five), with error/bound, instead of the three ways",
            ),
            *_candidate_flags(),
        ],
        epilog="exit codes: 0 every row right (with --candidate: all written rows right, so a "
        "partly written exercise exits 0 too); 1 a row is wrong; 2 bad input (one line says "
        "what); 3, with --candidate, nothing written yet (every gradient still `...`)",
    )


def _candidate_flags() -> list[Flag]:
    return [
        flag(
            "--candidate",
            metavar="PATH.py:FUNCTION",
            help="grade your own function (also module:function) instead of jaxninja's "
            "backward; for exercises 5 and 6 the file alone, PATH.py (or module): both its "
            "functions are graded",
        ),
        flag(
            "--exercise",
            type=_exercise,
            metavar="{1,2,3,5,6}",
            help="the exercise --candidate answers: 1 fn(params, v, Xb, Yb) -> dict, "
            "2 fn(logits, Yb) -> dlogits, 3 fn(dhpreact, bngain, bnvar_inv, bnraw) -> dhprebn; "
            "5 (part 5, the WaveNet) flatten_consecutive_backward(dout, n) -> dx and "
            "batchnorm_backward(dout, bnraw, bnvar_inv, gamma) -> (dx, dgamma, dbeta), graded "
            "in the WaveNet's stack at its sizes; 6 (part 6, makemore's GPT) "
            "layernorm_backward(dout, xhat, rstd, weight) -> (dx, dweight, dbias) and "
            "attention_backward(dy, q, k, v, att) -> (dq, dk, dv), graded in every LayerNorm and "
            "attention of the GPT at its sizes (exercise 4 is train --backward)",
        ),
        flag(
            "--watch",
            action="store_true",
            help="with --candidate: stay, and grade again on every save of the file (one "
            "process: jax imported once, the references kept in memory); Ctrl-C to stop",
        ),
        flag(
            "--timeout",
            type=_positive_float,
            default=DEFAULT_TIMEOUT,
            help=f"seconds --candidate may run on a case, tracing included ({DEFAULT_TIMEOUT:g})",
        ),
    ]


def _train_config_flags() -> list[Flag]:
    """TrainConfig's flags; every default None: TrainConfig's, or the checkpoint's on --resume."""
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    specs = (
        ("steps", _positive_int, "training steps"),
        ("batch_size", _positive_int, "batch size"),
        ("lr", _positive_float, f"initial learning rate ({lrs})"),
        ("lr_decay_step", _nonnegative_int, "the step from which the rate is lr * lr-decay"),
        ("lr_decay", _positive_float, "factor of the decay"),
        ("seed", _nonnegative_int, "initialisation and batches"),
        ("checkpoint_every", _positive_int, "steps between checkpoints"),
        ("bn_momentum", _positive_float, "of BatchNorm's running statistics"),
        ("eval_every", _positive_int, "steps between evaluations of the val split (the last "
         "step is evaluated too); the best model is kept as best.safetensors in --out"),
    )  # fmt: skip
    return [
        flag(f"--{name.replace('_', '-')}", type=kind, help=f"{what}{_shown_default(name)}")
        for name, kind, what in specs
    ] + [
        flag(
            "--optimizer",
            choices=OPTIMIZERS,
            help=f"sgd (the notebook's), adam, or adamw (makemore's){_shown_default('optimizer')}",
        ),
        flag(
            "--gradients",
            choices=GRADIENTS,
            help="manual: the model's hand-written backward; autodiff: jax.grad of its forward, "
            f"the control to compare a run with ({TrainConfig.gradients})",
        ),
    ]


def _shown_default(name: str) -> str:
    """' (default; mlp x; wavenet y)': TrainConfig's default and the lectures' schedules."""
    default = getattr(TrainConfig, name)
    lectures = "".join(f"; {m} {s[name]}" for m, s in SCHEDULES.items() if name in s)
    if default is None:  # lr: the optimizer's; eval_every: none, but where a lecture's is
        return f" (off{lectures})" if lectures else ""
    return f" ({default}{lectures})"


def _train_command() -> Command:
    return Command(
        "train on the manual gradients (exercise 4), then evaluate",
        [
            _data_flag(),
            *_train_config_flags(),
            _model_choice("the model to train (its lecture's sizes and schedule by default)"),
            *_model_flags("train"),
            flag("--out", default="out", help="run directory for checkpoints and plot (out)"),
            flag(
                "--resume",
                nargs="?",
                const=True,
                default=False,
                metavar="CHECKPOINT",
                help="continue the run in --out from its latest checkpoint, or from CHECKPOINT "
                "(a .safetensors file, such as out/ckpt-0050000.safetensors)",
            ),
            flag("--no-progress", action="store_true", help="no progress bar"),
            flag(
                "--backward",
                metavar="PATH.py:FUNCTION",
                help="train on your exercise-1 function fn(params, v, Xb, Yb) -> dict (also "
                "module:function), graded first and refused if wrong",
            ),
        ],
        groups=(("scaling out (see the README's 'Scaling out')", _scaling_flags()),),
    )


def _scaling_flags() -> list[Flag]:
    """--seeds and --devices, then a multi-process run's flags (defaults: JAX's variables)."""
    rows = (
        ("--seeds", _positive_int, 1,
         "train this many models at once, seeds --seed, --seed + 1, ... (1)"),
        ("--devices", _positive_int, None,
         "devices to use: one model's batch is split over them, or --seeds' models (default: 1 "
         "for one model; for --seeds, as many as divide the seeds, of one device per CPU core "
         "or the GPUs)"),
        ("--coordinator", None, os.environ.get("JAX_COORDINATOR_ADDRESS"),
         "HOST:PORT of process 0 in a multi-process run ($JAX_COORDINATOR_ADDRESS)"),
        ("--num-processes", _positive_int, _env_int("JAX_NUM_PROCESSES"),
         "processes in the run ($JAX_NUM_PROCESSES)"),
        ("--process-id", _nonnegative_int, _env_int("JAX_PROCESS_ID"),
         "this process, 0 .. num-processes - 1 ($JAX_PROCESS_ID)"),
        ("--init-timeout", _positive_int, 60,
         "seconds to wait for the coordinator and the other processes (60)"),
        ("--heartbeat-timeout", _positive_int, 100,
         "seconds without a sign of life from a process before the run gives it up as lost and "
         "stops (100, JAX's default)"),
    )  # fmt: skip
    return [flag(name, type=kind, default=default, help=what) for name, kind, default, what in rows]


def _checkpoint_command(what: str, more: list[Flag]) -> Command:
    """sample and eval: a trained checkpoint, and what each does with it."""
    return Command(
        f"{what} of a trained checkpoint",
        [
            flag(
                "--checkpoint", required=True, help="a .safetensors checkpoint, or a run directory"
            ),
            _model_choice("the model the checkpoint must be (refused if not)", "any"),
            *more,
        ],
    )


def commands() -> dict[str, Command]:
    """Every command and its flags, in the order `jaxninja --help` lists them."""
    folder = "where to write them (made if missing; a file already there is kept)"
    return {
        "data": _data_command(),
        "check": _check_command(),
        "train": _train_command(),
        "exercises": Command(
            "write the exercise files and the walkthrough notebooks into a folder",
            [flag("folder", help=folder)],
        ),
        "sample": _checkpoint_command(
            "sample names",
            [
                flag("-n", type=_positive_int, default=20, help="how many names (20)"),
                flag("--temperature", type=_positive_float, default=1.0, help="(1.0)"),
                flag("--seed", type=_nonnegative_int, default=0, help="(0)"),
            ],
        ),
        "eval": _checkpoint_command("split losses", [_data_flag()]),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _Top(
        prog="jaxninja",
        description="makemore parts 4-6 in JAX: hand-written backwards, checked three ways.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    parser.commands = {}
    for name, command in commands().items():
        p = parser.commands[name] = sub.add_parser(name, help=command.help, epilog=command.epilog)
        p.top = parser
        for names, kw in command.flags:
            p.add_argument(*names, **kw)
        for title, flags in command.groups:
            group = p.add_argument_group(title)
            for names, kw in flags:
                group.add_argument(*names, **kw)
    return parser
