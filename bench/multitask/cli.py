"""``python -m bench.multitask run|sweep|board|landscape|list`` (also ``python -m bench mtl ...``):
multi-task runs from the command line.

Every error a user can cause is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from bench import records
from bench.errors import UserError
from bench.multitask.board import AFFINITY_METHODS, board
from bench.multitask.landscape import compare
from bench.multitask.method import METHODS
from bench.multitask.runner import run
from bench.multitask.spec import make_mtl_spec
from bench.multitask.sweep import plan, run_sweep
from bench.multitask.tasks import TASK_SETS
from bench.registry import import_plugins, plugin_reference

DEFAULT_OUTPUT = "bench_output/multitask"


def _hparams(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--hparams is not JSON ({exc.msg}): {text}") from None
    if not isinstance(value, dict):
        raise UserError(f"--hparams must be a JSON object, got {text}")
    return value


def _grid(text: str | None) -> tuple[str, list[Any]] | None:
    """``rescale=0.1,0.3,1`` -> ("rescale", [0.1, 0.3, 1.0]); values are JSON scalars."""
    if text is None:
        return None
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise UserError(f"--grid must be KEY=V1,V2,..., got {text!r}")
    try:
        return key, [json.loads(v) for v in values.split(",")]
    except json.JSONDecodeError:
        raise UserError(f"--grid values must be numbers or JSON strings, got {values!r}") from None


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _spec_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "eval_every": args.eval_every,
        "size": args.size,
        "data_dir": args.data_dir,
    }


def _summary(record: dict[str, Any] | None) -> str:
    if record is None:
        return ""
    return " ".join(f"{t}:{v['test']:.4g}" for t, v in record["eval"].items())


def cmd_run(args: argparse.Namespace) -> None:
    spec = make_mtl_spec(
        args.method,
        args.tasks,
        args.trial_seed,
        args.hparams_seed,
        _hparams(args.hparams),
        **_spec_options(args),
    )
    outcome = run(spec, args.output_dir, args.data_dir, args.command_line)
    summary = _summary(outcome.last_record)
    print(f"{outcome.run_id} {outcome.status} test {summary} ({outcome.run_dir})")


def cmd_sweep(args: argparse.Namespace) -> None:
    specs = plan(
        _names(args.methods) or METHODS.names(),
        _names(args.tasks),
        args.trials,
        args.hparams_samples,
        _hparams(args.hparams),
        _grid(args.grid),
        skipped=print,
        **_spec_options(args),
    )

    def progress(i: int, spec: Any, outcome: Any) -> None:
        given = "".join(f" {k}={v}" for k, v in sorted(spec.overrides.items()))
        print(
            f"[{i + 1}/{len(specs)}] {spec.method} {spec.tasks} trial {spec.trial_seed} "
            f"hp {spec.hparams_seed}{given}: {outcome.status} {_summary(outcome.last_record)}"
        )

    run_sweep(specs, args.output_dir, args.data_dir, args.command_line, progress)


def cmd_board(args: argparse.Namespace) -> None:
    links_from = Path(args.out).parent if args.out else Path(".")
    split_by = _names(args.split_by or "")
    methods = _names(args.affinity_methods)
    text = board(
        args.output_dir,
        split_by,
        args.figures,
        methods,
        links_from,
        records.git_commit(),
        args.command_line,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


def cmd_landscape(args: argparse.Namespace) -> None:
    options = _spec_options(args)
    specs = [
        make_mtl_spec(m, args.tasks, args.trial_seed, 0, _hparams(h), **options)
        for m, h in ((args.scratch, "{}"), (args.pretrained, args.hparams))
    ]
    compare(specs, Path(args.out), args.data_dir)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")


def cmd_list(args: argparse.Namespace) -> None:
    for name in TASK_SETS.names():
        cls = TASK_SETS.get(name)
        print(f"task set {name}: {', '.join(f'{t.name} ({t.metric})' for t in cls.TASKS)}")
    for name in METHODS.names():
        print(f"method {name}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m bench.multitask", description=__doc__.splitlines()[0]
    )
    top.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="plugin module or .py file registering task sets or methods (repeatable)",
    )
    add_commands(top.add_subparsers(dest="command", required=True))
    return top


def add_commands(sub: Any) -> None:
    """run, sweep, board, landscape and list on ``sub`` (an ``add_subparsers()`` result), each
    with ``func`` taking the parsed args (with ``command_line``, the command as typed): what
    ``python -m bench.multitask`` and ``bench mtl`` (``bench.cli_args``) mount."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--output-dir", default=DEFAULT_OUTPUT)
        p.add_argument(
            "--data-dir", default=None, help="folder with mnist.npz (default: bench's search)"
        )
        p.add_argument("--hparams", default="{}", help="JSON object of hparam overrides")
        p.add_argument("--steps", type=int, default=None, help="default: the task set's")
        p.add_argument("--eval-every", type=int, default=None, help="default: the task set's")
        p.add_argument("--size", choices=("full", "tiny"), default="full")

    one = sub.add_parser("run", help="one seeded run")
    one.add_argument("method")
    one.add_argument("tasks")
    one.add_argument("--trial-seed", type=int, default=0)
    one.add_argument("--hparams-seed", type=int, default=0)
    common(one)
    one.set_defaults(func=cmd_run)

    many = sub.add_parser("sweep", help="methods x task sets x trials x hparams samples")
    many.add_argument("--methods", default="", help="comma-separated (default: all)")
    many.add_argument("--tasks", required=True, help="comma-separated task sets")
    many.add_argument("--trials", type=int, default=3)
    many.add_argument(
        "--hparams-samples", type=int, default=0, help="random draws besides the defaults"
    )
    many.add_argument(
        "--grid", default=None, help="KEY=V1,V2: one run per value instead of sampling KEY"
    )
    common(many)
    many.set_defaults(func=cmd_sweep)

    show = sub.add_parser(
        "board", help="per-task metrics, gains over single-task, affinity figures"
    )
    show.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    show.add_argument(
        "--split-by", default=None, help="hparams that make separate rows, e.g. rescale"
    )
    show.add_argument("--figures", default=None, help="folder for the task-affinity heatmaps")
    show.add_argument(
        "--affinity-methods",
        default=",".join(AFFINITY_METHODS),
        help="whose gradient cosines make the heatmap: the first with any, per task set",
    )
    show.add_argument("--out", default=None, help="also write the markdown here")
    show.set_defaults(func=cmd_board)

    land = sub.add_parser("landscape", help="main-task loss landscapes: scratch vs pretrained")
    land.add_argument("tasks")
    land.add_argument("--scratch", default="single_task")
    land.add_argument("--pretrained", default="pretrain_finetune")
    land.add_argument("--trial-seed", type=int, default=0)
    land.add_argument("--out", default="landscape.png", help="PNG; the numbers go beside it")
    common(land)
    land.set_defaults(func=cmd_landscape)

    names = sub.add_parser("list", help="task sets and methods")
    names.set_defaults(func=cmd_list)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    # what runs and boards record as the command that made them (paths as typed)
    args.command_line = shlex.join(["python", "-m", "bench.multitask", *argv])
    return dispatch(args)


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen subcommand (``args.func``); a user's error is one line, exit 2."""
    try:
        import_plugins(plugin_reference(m) for m in args.imports)
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output or data folder: read-only, full, not a folder, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"error: {where}{exc.strerror or exc}; check the path and its permissions",
            file=sys.stderr,
        )
        return 2
    return 0
