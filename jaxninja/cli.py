"""The command line: flags mapped explicitly onto the configs, then calls into the package.

Nothing else in jaxninja parses arguments. A `UsageError` anywhere below becomes one line on
stderr and exit code 2; argparse's own errors are folded into the same one-line form.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from jaxninja.config import (
    DEFAULT_LR,
    DEFAULT_TIMEOUT,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    model_config,
    training_config,
)
from jaxninja.errors import Interrupted, LostProcess, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def _env_int(name: str) -> int | None:
    """An integer from the environment, for a flag's default; a bad value is a one-line error."""
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"${name} must be an integer, got {text!r}") from None


def _add_data_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="words file, one word per line (default: $JAXNINJA_DATA, else data/names.txt, "
        "downloaded if missing)",
    )


MODEL_FLAGS = {
    "block_size": "context length",
    "n_embd": "embedding size",
    "n_hidden": "hidden units",
}
# what each model's run ends at in its lecture, beside jaxninja's split losses
LECTURE = {
    "mlp": "the notebook: train 2.0719, val 2.1162 (calibrated BatchNorm)",
    "wavenet": "the lecture: train 1.7690, val 1.9937 (running statistics)",
}


def _add_model_choice(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help=f"{what}: mlp (part 4, the default) or wavenet (part 5)",
    )


def _add_model_flags(
    p: argparse.ArgumentParser, use: str, names: tuple[str, ...] = tuple(MODEL_FLAGS)
) -> None:
    """The model's size flags, their help read off each model's defaults for `use` ("check" or
    "train"). A flag left out is None: the model's default, or the checkpoint's on --resume."""
    for name in names:
        shown = "; ".join(f"{m} {getattr(model_config(m, use), name)}" for m in MODELS)
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=_positive_int,
            default=None,
            help=f"{MODEL_FLAGS[name]} ({shown})",
        )


def _sizes(args: argparse.Namespace, names: tuple[str, ...] = tuple(MODEL_FLAGS)) -> dict:
    """The size flags given (not None)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


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
    _add_model_flags(p, "check", names=("block_size",))
    p.add_argument("--url", default=None, help="download from this address instead")
    p.add_argument("--force", action="store_true", help="download even if the file exists")

    p = sub.add_parser(
        "check",
        help="verify the manual backward three ways; print the cmp table",
        epilog="exit codes: 0 every row right; 1 a row is wrong; 2 bad input (one line says "
        "what); 3, with --candidate, nothing written yet (every gradient still `...`)",
    )
    _add_data_flag(p)
    _add_model_choice(p, "the model whose backward is checked")
    _add_model_flags(p, "check")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        help="batch size (32; with --candidate: 32 and 5, unless given)",
    )
    p.add_argument(
        "--seed",
        type=_nonnegative_int,
        help="seed of the parameters and batch (0; with --candidate: 0 and 1, unless given)",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument(
        "--wide",
        "--all-ways",
        action="store_true",
        help="a column for every way (five), with error/bound, instead of the three ways",
    )
    p.add_argument(
        "--candidate",
        metavar="PATH.py:FUNCTION",
        help="grade your own function (also module:function) instead of jaxninja's backward; "
        "for exercise 5 the file alone, PATH.py (or module): both its functions are graded",
    )
    p.add_argument(
        "--exercise",
        type=int,
        choices=(1, 2, 3, 4, 5),
        help="the exercise --candidate answers: 1 fn(params, v, Xb, Yb) -> dict, "
        "2 fn(logits, Yb) -> dlogits, 3 fn(dhpreact, bngain, bnvar_inv, bnraw) -> dhprebn; "
        "5 (part 5, the WaveNet) flatten_consecutive_backward(dout, n) -> dx and "
        "batchnorm_backward(dout, bnraw, bnvar_inv, gamma) -> (dx, dgamma, dbeta), graded in "
        "the WaveNet's stack at its sizes (exercise 4 is train --backward)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds --candidate may run on a case, tracing included ({DEFAULT_TIMEOUT:g})",
    )

    # train: every default None here means "TrainConfig's default, or the checkpoint's on --resume"
    p = sub.add_parser("train", help="train on the manual gradients (exercise 4), then evaluate")
    _add_data_flag(p)
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    for flag, kind, what in (
        ("steps", _positive_int, "training steps"),
        ("batch_size", _positive_int, "batch size"),
        ("lr", _positive_float, f"initial learning rate ({lrs})"),
        ("lr_decay_step", _nonnegative_int, "the step from which the rate is lr * lr-decay"),
        ("lr_decay", _positive_float, "factor of the decay"),
        ("seed", _nonnegative_int, "initialisation and batches"),
        ("checkpoint_every", _positive_int, "steps between checkpoints"),
        ("bn_momentum", _positive_float, "of BatchNorm's running statistics"),
    ):
        default = getattr(TrainConfig, flag)
        shown = "" if default is None else f" ({default}"
        if shown and any(flag in s for s in SCHEDULES.values()):
            shown += "".join(f"; {m} {s[flag]}" for m, s in SCHEDULES.items() if flag in s)
        shown += ")" if shown else ""
        p.add_argument(f"--{flag.replace('_', '-')}", type=kind, help=f"{what}{shown}")
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help=f"sgd (the notebook's) or adam ({TrainConfig.optimizer})",
    )
    _add_model_choice(p, "the model to train (its lecture's sizes and schedule by default)")
    _add_model_flags(p, "train")
    p.add_argument("--out", default="out", help="run directory for checkpoints and plot (out)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue the run in --out from its latest checkpoint, or from CHECKPOINT "
        "(a .safetensors file, such as out/ckpt-0050000.safetensors)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--backward",
        metavar="PATH.py:FUNCTION",
        help="train on your exercise-1 function fn(params, v, Xb, Yb) -> dict (also "
        "module:function), graded first and refused if wrong",
    )
    g = p.add_argument_group("scaling out (see the README's 'Scaling out')")
    g.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="train this many models at once, seeds --seed, --seed + 1, ... (1)",
    )
    g.add_argument(
        "--devices",
        type=_positive_int,
        help="devices to use: one model's batch is split over them, or --seeds' models "
        "(default: 1 for one model; for --seeds, as many as divide the seeds, of one device "
        "per CPU core or the GPUs)",
    )
    g.add_argument(
        "--coordinator",
        default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
        help="HOST:PORT of process 0 in a multi-process run ($JAX_COORDINATOR_ADDRESS)",
    )
    g.add_argument(
        "--num-processes",
        type=_positive_int,
        default=_env_int("JAX_NUM_PROCESSES"),
        help="processes in the run ($JAX_NUM_PROCESSES)",
    )
    g.add_argument(
        "--process-id",
        type=_nonnegative_int,
        default=_env_int("JAX_PROCESS_ID"),
        help="this process, 0 .. num-processes - 1 ($JAX_PROCESS_ID)",
    )
    g.add_argument(
        "--init-timeout",
        type=_positive_int,
        default=60,
        help="seconds to wait for the coordinator and the other processes (60)",
    )
    g.add_argument(
        "--heartbeat-timeout",
        type=_positive_int,
        default=100,
        help="seconds without a sign of life from a process before the run gives it up as lost "
        "and stops (100, JAX's default)",
    )

    p = sub.add_parser(
        "exercises", help="write the exercise files and the walkthrough notebooks into a folder"
    )
    p.add_argument(
        "folder", help="where to write them (made if missing; a file already there is kept)"
    )

    for name, what in (("sample", "sample names"), ("eval", "split losses")):
        p = sub.add_parser(name, help=f"{what} of a trained checkpoint")
        p.add_argument(
            "--checkpoint", required=True, help="a .safetensors checkpoint, or a run directory"
        )
        _add_model_choice(p, "the model the checkpoint must be (refused if not; default: any)")
        if name == "sample":
            p.add_argument("-n", type=_positive_int, default=20, help="how many names (20)")
            p.add_argument("--temperature", type=_positive_float, default=1.0, help="(1.0)")
            p.add_argument("--seed", type=_nonnegative_int, default=0, help="(0)")
        else:
            _add_data_flag(p)
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
    splits = data.load_splits(path, model_config(**_sizes(args, ("block_size",))).block_size)
    vocab = splits.vocab
    print(f"data: {path}")
    print(f"vocab_size: {vocab.size} ('.' + {''.join(vocab.chars)!r})")
    for name in data.SPLITS:
        X, _ = splits.data[name]
        print(f"{name:5s}: {len(splits.words[name]):6d} words, {X.shape[0]:7d} examples")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from jaxninja import data
    from jaxninja.check import stack, verify
    from jaxninja.config import check_batch_size

    if args.candidate or args.exercise:
        return _grade(args)
    args.batch_size = 32 if args.batch_size is None else args.batch_size
    args.seed = 0 if args.seed is None else args.seed
    check_batch_size(args.batch_size)
    cfg = model_config(args.model or "mlp", "check", dtype=args.dtype, **_sizes(args))
    path = data.resolve_data_path(args.data)
    splits = data.load_splits(path, cfg.block_size)
    cfg = replace(cfg, vocab_size=splits.vocab.size)
    check = verify.run_check if cfg.model == "mlp" else stack.run_check
    report = check(cfg, *splits.data["train"], batch_size=args.batch_size, seed=args.seed)
    print(report.to_json() if args.json else verify.format_table(report, wide=args.wide))
    return 0 if report.ok else 1


def _grade(args: argparse.Namespace) -> int:
    """check --candidate: the same table, JSON and exit code, for the learner's function."""
    from jaxninja.learn.grader import grade, load_function, load_module

    if not (args.candidate and args.exercise):
        raise UsageError(
            "--candidate and --exercise go together: --candidate PATH.py:FUNCTION --exercise "
            "1|2|3, or --candidate PATH.py --exercise 5"
        )
    if args.exercise == 4:
        raise UsageError(
            "exercise 4 is training on your exercise-1 gradients: jaxninja train --backward "
            "ex1_backward.py:backward"
        )
    fn, name = (load_module if args.exercise == 5 else load_function)(args.candidate)
    result = grade(
        fn, args.exercise, dtype=args.dtype, seed=args.seed, batch_size=args.batch_size,
        data=args.data, name=name, timeout=args.timeout, **_sizes(args),
    )  # fmt: skip
    print(result.to_json() if args.json else result.format(wide=args.wide))
    if not result.started:
        return 3  # nothing written yet: not "OK", and not wrong either
    return 0 if result.ok else 1


def _cluster(args: argparse.Namespace):
    """The multi-process flags (or their environment variables) as a ClusterConfig, or None."""
    from jaxninja.training.parallel import ClusterConfig

    given = (args.coordinator, args.num_processes, args.process_id)
    if all(x is None for x in given):
        return None
    if None in given:
        raise UsageError(
            "a multi-process run needs --coordinator, --num-processes and --process-id "
            "(or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID) together"
        )
    return ClusterConfig(
        args.coordinator, args.num_processes, args.process_id, args.init_timeout,
        args.heartbeat_timeout,
    )  # fmt: skip


def _run_plan(args: argparse.Namespace):
    """The flags' device and process plan (parallel.RunPlan, which decides)."""
    from jaxninja.training.parallel import RunPlan

    return RunPlan(args.seeds, args.devices, _cluster(args))


def _train_configs(args: argparse.Namespace, vocab_size: int, resume):
    """Flags onto ModelConfig and TrainConfig at the defaults of --model's lecture; on --resume
    the checkpoint's values fill the gaps, and its model is the run's."""
    names = ("steps", "batch_size", "lr", "lr_decay_step", "lr_decay", "optimizer", "seed",
             "checkpoint_every", "bn_momentum")  # fmt: skip
    train_flags = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if "optimizer" in train_flags and "lr" not in train_flags and not args.resume:
        train_flags["lr"] = None  # the chosen optimizer's default (config.DEFAULT_LR)
    if not resume:
        name = args.model or "mlp"
        model = model_config(name, "train", vocab_size=vocab_size, **_sizes(args))
        return model, training_config(name, **train_flags)
    model, train = resume[0].model, resume[0].train
    if args.model not in (None, model.model):
        where = resume[0].path or args.out
        raise UsageError(
            f"--resume: {where} is a checkpoint of the {model.model} model, and --model says "
            f"{args.model}: drop --model, or train into another --out"
        )
    model = replace(model, vocab_size=vocab_size, **_sizes(args))
    return model, replace(train, **train_flags)


def cmd_train(args: argparse.Namespace) -> int:
    """What can fail in one process alone is checked before the processes join, so one bad
    process never leaves the others waiting: the data, the configs (a --resume checkpoint read
    whole), and, in the process that writes, the run directory's lock."""
    from jaxninja import data
    from jaxninja.models import registry
    from jaxninja.training import checkpoint
    from jaxninja.training.loop import refuse_backward, refuse_foreign_files

    path = data.resolve_data_path(args.data)
    words = data.read_words(path)
    vocab = data.Vocab.from_words(words)
    chosen = None if args.resume is True else args.resume
    resume = checkpoint.load_run(args.out, args.seeds, chosen) if args.resume else None
    model_cfg, train_cfg = _train_configs(args, vocab.size, resume)
    registry.of(model_cfg).check_fits(model_cfg)
    if args.backward:
        refuse_backward(model_cfg)
    refuse_foreign_files(args.out, train_cfg, args.seeds)
    writes = args.process_id in (None, 0)
    with checkpoint.hold_run_dir(args.out) if writes else nullcontext():
        _run_plan(args).start()
        return _train_and_report(args, path, words, vocab, model_cfg, train_cfg, resume)


def _train_and_report(args, path, words, vocab, model_cfg, train_cfg, resume) -> int:
    from jaxninja import data
    from jaxninja.training import parallel
    from jaxninja.training.loop import reporting, train

    main = parallel.is_main_process()
    say = print if main else (lambda *_: None)
    splits = data.splits_from_words(words, model_cfg.block_size)
    backward = _graded_backward(args.backward, model_cfg, path) if args.backward else None
    many = f"{args.seeds} models of " if args.seeds > 1 else ""
    say(f"training {many}{train_cfg.steps} steps of {train_cfg.optimizer} on {path}: {model_cfg}")
    result = train(
        model_cfg, train_cfg, splits.data["train"], vocab, args.out, seeds=args.seeds,
        devices=args.devices, resume=resume or False, progress=not args.no_progress and main,
        log=say, backward=backward,
    )  # fmt: skip
    with reporting(result, args.out):
        return _report(args, result, splits, vocab, say)


def _report(args, result, splits, vocab, say) -> int:
    """A finished run: its speed, then (process 0) its split losses and samples."""
    from jaxninja.models import registry
    from jaxninja.training import parallel
    from jaxninja.training.loop import PLOT
    from jaxninja.training.sample import sample_names

    if result.steps_run:
        us = result.train_seconds / result.steps_run * 1e6
        per = f"{us / args.seeds:.1f} µs/model-step" if args.seeds > 1 else f"{us:.1f} µs/step"
        say(
            f"trained {result.steps_run} steps in {result.train_seconds:.1f} s ({per}; "
            f"compile {result.compile_seconds:.1f} s)"
        )
    if not parallel.is_main_process():
        return 0
    if args.seeds > 1:
        _print_seed_table(result.checkpoints, splits)
        print(f"checkpoints and loss plots: {Path(args.out)}/seed-*/")
        return 0
    ckpt = result.checkpoint
    _print_split_losses(ckpt, splits)
    print(f"  ({LECTURE[ckpt.model.model]})")
    names = sample_names(ckpt.model, registry.to_device(ckpt.params), ckpt.bn, vocab, n=10, seed=0)
    print("samples: " + ", ".join(names))
    print(f"checkpoint: {result.path}; loss plot: {Path(args.out) / PLOT}")
    return 0


def _graded_backward(spec: str, model_cfg, data_path: Path):
    """train --backward: the learner's exercise-1 function, graded at the run's sizes first;
    refused if any gradient is wrong or a parameter's is not written."""
    from jaxninja.learn.grader import grade, load_function
    from jaxninja.models.mlp import PARAMS

    fn, name = load_function(spec)
    result = grade(
        fn, 1, dtype=model_cfg.dtype, n_hidden=model_cfg.n_hidden, n_embd=model_cfg.n_embd,
        block_size=model_cfg.block_size, data=str(data_path), name=name,
    )  # fmt: skip
    if not result.ok:
        hint = f" (hint: {result.hint()})" if result.hint() else ""
        raise UsageError(f"--backward {name} is refused: {result.verdict()}{hint}")
    if missing := [k for k in PARAMS if k not in result.written]:
        raise UsageError(
            f"--backward {name} is refused: training needs the gradients of the 7 parameters, "
            f"and it does not write {', '.join('d' + k for k in missing)}"
        )
    print(f"--backward {name}: graded right ({result.verdict()[4:]}); training on it")
    return fn


def _split_losses(ckpt, splits, bn) -> list[float]:
    """The checkpoint's loss on each split, BatchNorm on the statistics `bn`."""
    from jaxninja.data import SPLITS
    from jaxninja.models import registry

    params = registry.to_device(ckpt.params)
    return [registry.split_loss(ckpt.model, params, bn, *splits.data[s]) for s in SPLITS]


def _stats_of(ckpt) -> list[tuple[str, object]]:
    """(label, BatchNorm statistics) to evaluate a checkpoint with: calibrated (once training
    has ended) and running (the lecture's eval in part 5)."""
    stats = [("calibrated", ckpt.bn_calibrated), ("running", ckpt.bn_running)]
    return [(label, bn) for label, bn in stats if bn is not None]


def _print_seed_table(ckpts, splits) -> None:
    """Each seed's split losses, then their mean ± sample std; calibrated BatchNorm, then the
    running statistics."""
    import numpy as np

    from jaxninja.data import SPLITS

    for label, _ in _stats_of(ckpts[0]):
        rows = [_split_losses(c, splits, dict(_stats_of(c))[label]) for c in ckpts]
        print(f"split loss ({label} BatchNorm):")
        print(f"{'seed':>12s}  " + "  ".join(f"{s:>7s}" for s in SPLITS))
        for ckpt, row in zip(ckpts, rows, strict=True):
            print(f"{ckpt.train.seed:12d}  " + "  ".join(f"{v:7.4f}" for v in row))
        table = np.asarray(rows)
        spread = table.std(0, ddof=1) if len(rows) > 1 else np.zeros(len(SPLITS))
        stats = zip(SPLITS, table.mean(0), spread, strict=True)
        cells = "  ".join(f"{s} {m:.4f} ± {d:.4f}" for s, m, d in stats)
        print(f"mean ± std over {len(rows)} seeds: {cells}")
    print(f"  ({LECTURE[ckpts[0].model.model]})")


def _print_split_losses(ckpt, splits) -> None:
    from jaxninja.data import SPLITS

    for label, bn in _stats_of(ckpt):
        losses = _split_losses(ckpt, splits, bn)
        cells = "  ".join(f"{s} {v:.4f}" for s, v in zip(SPLITS, losses, strict=True))
        print(f"split loss ({label} BatchNorm): {cells}")


def _checked_model(ckpt, wanted: str | None) -> None:
    """eval/sample --model: the checkpoint must be of that model."""
    if wanted not in (None, ckpt.model.model):
        raise UsageError(
            f"{ckpt.path} is a checkpoint of the {ckpt.model.model} model, not of {wanted}: "
            f"drop --model, or give a checkpoint of the {wanted} model"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxninja import data
    from jaxninja.training import checkpoint

    ckpt = checkpoint.load(args.checkpoint)
    _checked_model(ckpt, args.model)
    path = data.resolve_data_path(args.data)
    splits = data.load_splits(path, ckpt.model.block_size)
    checkpoint.check_vocab(ckpt, splits.vocab, str(path))
    print(f"checkpoint of the {ckpt.model.model} model at step {ckpt.step} on {path}")
    _print_split_losses(ckpt, splits)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from jaxninja.models import registry
    from jaxninja.training import checkpoint
    from jaxninja.training.sample import sample_names

    ckpt = checkpoint.load(args.checkpoint)
    _checked_model(ckpt, args.model)
    names = sample_names(
        ckpt.model, registry.to_device(ckpt.params), ckpt.bn, ckpt.vocab,
        n=args.n, seed=args.seed, temperature=args.temperature,
    )  # fmt: skip
    print("\n".join(names))
    return 0


def cmd_exercises(args: argparse.Namespace) -> int:
    from jaxninja.learn.files import GRADE_COMMANDS, write_exercises

    written, kept = write_exercises(args.folder)
    if written:
        print(f"wrote {', '.join(p.name for p in written)} into {args.folder}")
    if kept:
        print(f"kept {', '.join(p.name for p in kept)}: already there, left as they are")
    print(
        "open walkthrough.ipynb (part 4) and wavenet_walkthrough.ipynb (part 5), fill the "
        f"`...  # TODO` lines, then grade from {args.folder}:"
    )
    for command in GRADE_COMMANDS.values():
        print(f"  {command}")
    print("(the data: --data PATH or $JAXNINJA_DATA; else data/names.txt there, downloaded)")
    return 0


COMMANDS = {
    "data": cmd_data,
    "check": cmd_check,
    "exercises": cmd_exercises,
    "train": cmd_train,
    "eval": cmd_eval,
    "sample": cmd_sample,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except Interrupted as e:
        print(f"jaxninja: {e}", file=sys.stderr)
        return e.exit_code
    except LostProcess as e:
        print(f"jaxninja: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # not JAX's shutdown barrier: it would wait for the lost process, then abort
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
