"""The command line: flags (the table in cli_flags.py) mapped explicitly onto the configs, then
calls into the package.

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

from jaxninja.cli_flags import FLAG_MODELS, MODEL_FLAGS, build_parser
from jaxninja.config import model_config, training_config
from jaxninja.errors import Interrupted, LostProcess, UsageError


def _sizes(
    args: argparse.Namespace, names: tuple[str, ...] = tuple(MODEL_FLAGS), model: str = ""
) -> dict:
    """The size flags given (not None); one that `model` does not read is refused."""
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    for name in given:
        if model and model not in FLAG_MODELS.get(name, (model,)):
            users = " and the ".join(FLAG_MODELS[name])
            flag = f"--{name.replace('_', '-')}"
            raise UsageError(f"{flag} sizes the {users}, not the {model}: drop {flag}")
    return given


def cmd_data(args: argparse.Namespace) -> int:
    from jaxninja import data
    from jaxninja.models import registry

    if args.action == "download":
        dest = data.resolve_data_path(args.data, download=False)
        if dest.exists() and not args.force:
            print(f"{dest} already exists (use --force to download again)")
            return 0
        data.download_names(dest, url=args.url)
        print(f"downloaded {dest} (SHA-256 checked)")
        return 0
    path = data.resolve_data_path(args.data)
    words = data.read_words(path)
    cfg = _model_for_data(args.model or "mlp", "train", words, _sizes(args, ("block_size",)))
    splits = registry.splits(cfg, words)
    vocab = splits.vocab
    print(f"data: {path}")
    print(f"vocab_size: {vocab.size} ('.' + {''.join(vocab.chars)!r})")
    rows = registry.of(cfg).rows
    what = "makemore's rows: <start> + word, 0-padded" if rows else "context windows"
    print(f"block_size: {cfg.block_size} ({what})")
    for name in data.SPLITS:
        X, Y = splits.data[name]
        count = f", {int((Y != data.IGNORE).sum()):7d} counted positions" if rows else ""
        unit = "rows" if rows else "examples"
        print(f"{name:5s}: {len(splits.words[name]):6d} words, {X.shape[0]:7d} {unit}{count}")
    return 0


def _model_for_data(model: str, use: str, words: list[str] | None, sizes: dict, **fields):
    """model_config at `sizes`, its block size the data's where the model takes it from there
    (the GPT: makemore's longest word + 1) and none is given."""
    from jaxninja.models import registry

    if words and "block_size" not in sizes and (T := registry.data_block_size(model, words)):
        sizes = {**sizes, "block_size": T}
    return model_config(model, use, **sizes, **fields)


def cmd_check(args: argparse.Namespace) -> int:
    from jaxninja import data
    from jaxninja.check import gpt, mlp, wavenet
    from jaxninja.config import check_batch_size
    from jaxninja.parity.table import format_table

    if args.candidate or args.exercise or args.watch:
        return _grade(args)
    args.batch_size = 32 if args.batch_size is None else args.batch_size
    args.seed = 0 if args.seed is None else args.seed
    check_batch_size(args.batch_size)
    name = args.model or "mlp"
    cfg = model_config(name, "check", dtype=args.dtype, **_sizes(args, model=name))
    path = data.resolve_data_path(args.data)
    splits = (data.load_rows if cfg.model == "gpt" else data.load_splits)(path, cfg.block_size)
    cfg = replace(cfg, vocab_size=splits.vocab.size)
    check = {"mlp": mlp.run_check, "wavenet": wavenet.run_check, "gpt": gpt.run_check}[cfg.model]
    report = check(cfg, *splits.data["train"], batch_size=args.batch_size, seed=args.seed)
    print(report.to_json() if args.json else format_table(report, wide=args.wide))
    return 0 if report.ok else 1


def _grade(args: argparse.Namespace) -> int:
    """check --candidate: the same table, JSON and exit code, for the learner's function; with
    --watch, again on every save of its file (learn/watch.py), until Ctrl-C."""
    if not (args.candidate and args.exercise):
        raise UsageError(
            "--candidate and --exercise go together: --candidate PATH.py:FUNCTION --exercise "
            "1|2|3, or --candidate PATH.py --exercise 5|6"
        )
    if args.exercise == 4:
        raise UsageError(
            "exercise 4 is training on your exercise-1 gradients: jaxninja train --backward "
            "ex1_backward.py:backward"
        )
    if args.watch:
        from jaxninja.learn.watch import watch, watched_file

        return watch(watched_file(args.candidate), lambda: _grade_once(args))
    return _grade_once(args)


def _grade_once(args: argparse.Namespace) -> int:
    """One grade of the file as it is now (imported afresh): its table or JSON, its exit code."""
    from jaxninja.learn.grader import grade, load_function, load_module

    if args.exercise in (5, 6):
        fn, name = load_module(args.candidate, args.exercise)
    else:
        fn, name = load_function(args.candidate)
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


def _train_configs(
    args: argparse.Namespace, vocab_size: int, resume, words: list[str] | None = None
):
    """Flags onto ModelConfig and TrainConfig at the defaults of --model's lecture (the GPT's
    block size that of `words`, where given); on --resume the checkpoint's values fill the
    gaps, and its model is the run's."""
    names = ("steps", "batch_size", "lr", "lr_decay_step", "lr_decay", "optimizer", "seed",
             "checkpoint_every", "bn_momentum", "eval_every", "gradients")  # fmt: skip
    train_flags = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if "optimizer" in train_flags and "lr" not in train_flags and not args.resume:
        train_flags["lr"] = None  # the chosen optimizer's default (config.DEFAULT_LR)
    if not resume:
        name = args.model or "mlp"
        sizes = _sizes(args, model=name)
        model = _model_for_data(name, "train", words, sizes, vocab_size=vocab_size)
        return model, training_config(name, **train_flags)
    model, train = resume[0].model, resume[0].train
    if args.model not in (None, model.model):
        where = resume[0].path or args.out
        raise UsageError(
            f"--resume: {where} is a checkpoint of the {model.model} model, and --model says "
            f"{args.model}: drop --model, or train into another --out"
        )
    model = replace(model, vocab_size=vocab_size, **_sizes(args, model=model.model))
    return model, replace(train, **train_flags)


def cmd_train(args: argparse.Namespace) -> int:
    """Whatever refuses the run is asked before anything is said about it, and what can fail in
    one process alone before the processes join, so one bad process never leaves the others
    waiting: the data, the configs (a --resume checkpoint read whole), the run directory (its
    checkpoints and files; in the process that writes, its lock). Then the devices."""
    from jaxninja import data
    from jaxninja.models import registry
    from jaxninja.training import checkpoint, preflight

    path = data.resolve_data_path(args.data)
    words = data.read_words(path)
    chosen = None if args.resume is True else args.resume
    resume = checkpoint.load_run(args.out, args.seeds, chosen) if args.resume else None
    model_cfg, train_cfg = _train_configs(args, data.Vocab.from_words(words).size, resume, words)
    registry.of(model_cfg).check_fits(model_cfg)
    splits = registry.splits(model_cfg, words)
    preflight.refuse_run(
        model_cfg, train_cfg, splits.data["train"], splits.vocab, args.out, args.seeds, resume,
        backward=bool(args.backward), val=splits.data["val"],
    )  # fmt: skip
    preflight.refuse_foreign_files(args.out, train_cfg, args.seeds)
    writes = args.process_id in (None, 0)
    with checkpoint.hold_run_dir(args.out) if writes else nullcontext():
        where = _run_plan(args)
        where.start()
        preflight.run_mesh(where, train_cfg, backward=bool(args.backward))
        return _train_and_report(args, path, splits, model_cfg, train_cfg, resume)


def _run_line(args: argparse.Namespace, path, mc, tc) -> str:
    """The line a run opens with: how it trains, on what and into where, and the model."""
    from jaxninja.models import registry

    many = f"{args.seeds} models of " if args.seeds > 1 else ""
    grads = " on jax.grad's gradients (the control)" if tc.gradients == "autodiff" else ""
    lr = f"lr {tc.lr:g}"
    if tc.lr_decay_step < tc.steps:
        lr += f", {tc.lr_decayed:g} from step {tc.lr_decay_step}"
    decay = f", weight decay {tc.weight_decay:g}" if tc.optimizer == "adamw" else ""
    evals = f", the val loss every {tc.eval_every}" if tc.eval_every else ""
    n = registry.of(mc).n_params(mc)
    return (
        f"training {many}{tc.steps} steps of {tc.optimizer} ({lr}, batch {tc.batch_size}{decay}"
        f"{evals}){grads}, on {path} into {args.out}: the {mc.model}, {n:,} parameters, "
        f"{mc.described()}"
    )


def _train_and_report(args, path, splits, model_cfg, train_cfg, resume) -> int:
    from jaxninja.training import parallel
    from jaxninja.training.loop import train
    from jaxninja.training.signals import reporting

    main = parallel.is_main_process()
    say = print if main else (lambda *_: None)
    backward = _graded_backward(args.backward, model_cfg, path) if args.backward else None
    say(_run_line(args, path, model_cfg, train_cfg))
    result = train(
        model_cfg, train_cfg, splits.data["train"], splits.vocab, args.out, seeds=args.seeds,
        devices=args.devices, resume=resume or False, progress=not args.no_progress and main,
        log=say, backward=backward, val=splits.data["val"],
    )  # fmt: skip
    with reporting(result, args.out):
        return _report(args, result, splits, say)


def _report(args, result, splits, say) -> int:
    """A finished run: its speed, then (process 0) its split losses and samples."""
    from jaxninja.models import registry
    from jaxninja.training import parallel
    from jaxninja.training.plot import PLOT
    from jaxninja.training.report import LECTURE, print_best, print_seed_table
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
        print_seed_table(result.checkpoints, splits, [p.parent for p in result.paths])
        print(f"checkpoints and loss plots: {Path(args.out)}/seed-*/")
        return 0
    ckpt = result.checkpoint
    _print_split_losses(ckpt, splits)
    print_best(ckpt, result.path.parent, splits)
    print(f"  ({LECTURE[ckpt.model.model]})")
    params = registry.to_device(ckpt.params)
    names = sample_names(ckpt.model, params, ckpt.bn, splits.vocab, n=10, seed=0)
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


def _print_split_losses(ckpt, splits) -> None:
    from jaxninja.training.report import print_split_losses

    print_split_losses(ckpt, splits)


def _checked_model(ckpt, wanted: str | None) -> None:
    """eval/sample --model: the checkpoint must be of that model."""
    if wanted not in (None, ckpt.model.model):
        raise UsageError(
            f"{ckpt.path} is a checkpoint of the {ckpt.model.model} model, not of {wanted}: "
            f"drop --model, or give a checkpoint of the {wanted} model"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxninja import data
    from jaxninja.models import registry
    from jaxninja.training import checkpoint

    ckpt = checkpoint.load(args.checkpoint)
    _checked_model(ckpt, args.model)
    path = data.resolve_data_path(args.data)
    splits = registry.splits(ckpt.model, data.read_words(path))
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
        "open walkthrough.ipynb (part 4), wavenet_walkthrough.ipynb (part 5) and "
        "gpt_walkthrough.ipynb (part 6), fill the `...  # TODO` lines, then grade from "
        f"{args.folder} (--watch: again on every save):"
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
    from jaxninja import compile_cache

    compile_cache.enable()  # before any compile: a second run of the same shapes loads them
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
