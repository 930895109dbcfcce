"""Loss landscapes of finished transfer runs: a scratch run beside a pretrained one (Li et al.
2018), the smoother-basin claim made about pretraining, made checkable.

For each run, the target's training loss (mean cross-entropy, no L2 term, network in eval
mode) on the rows it trained on (the ``in`` split of the task's training environment,
``target``), and on its validation rows (the ``out`` split), drawn along the straight line
from the run's starting weights to its final ones; and the training loss on a 2-D slice
through the final weights along two filter-normalised random directions (``bench.landscape``).

Nothing is retrained. The final weights are the run's checkpoint; the start is rebuilt as the
runner builds it: the algorithm constructed under the run's seeds (its initialisation), then
the recipe's ``prepare_run``, which loads the copied blocks from the pretraining cached in the
runs' output directory (``<output>/pretrained/<id>``). A missing cache is an error rather than
retrained here, and the loaded pretraining must be the one the run's spec.json names. Every
parameter of the network moves (frozen blocks too: they are part of the landscape).

    python -m bench landscape --runs OUTPUT_DIR --task genomic_toy_shift \\
        --recipes scratch,finetune --trial-seed 0 --out landscape.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from bench import records
from bench.algorithms import Algorithm
from bench.algorithms.base import classification_loss
from bench.datasets import load_dataset
from bench.errors import UserError
from bench.landscape import SLICE, along_line, draw, filter_normalised, on_slice
from bench.posthoc.trained import TrainedRun, build_algorithm, load_trained
from bench.run_data import RunData
from bench.seeding import torch_generator
from bench.transfer.pretrain import pretrained_dir

# What the runs must share for their landscapes to be drawn on the same loss and data.
SAME = ("dataset", "test_envs", "trial_seed", "size", "holdout_fraction", "data")


def check_comparable(runs: Sequence[TrainedRun]) -> None:
    """UserError naming the first pair of runs that are not on the same task, trial and data."""
    if not 2 <= len(runs) <= 4:
        raise UserError(f"a landscape compares 2 to 4 finished runs, got {len(runs)}")
    first = runs[0].info["spec"]
    for run in runs[1:]:
        spec = run.info["spec"]
        differ = [k for k in SAME if spec.get(k) != first.get(k)]
        if differ:
            raise UserError(
                f"runs {runs[0].run_id} and {run.run_id} differ in {', '.join(differ)} "
                f"({first['dataset']} trial {first['trial_seed']} vs {spec['dataset']} trial "
                f"{spec['trial_seed']}); compare runs of one task and trial"
            )


def _finished(directory: Path, data_dir: str | None) -> TrainedRun:
    if not (directory / records.SPEC).exists():
        raise UserError(f"{directory}: not a run directory (no {records.SPEC})")
    try:
        return load_trained(directory, data_dir)
    except records.DamagedRun as exc:
        raise UserError(f"{directory}: damaged run ({exc})") from None


def starting_algorithm(run: TrainedRun, data_dir: str | None) -> Algorithm:
    """The run's algorithm at the weights its training started from (see the module doc)."""
    spec, pretrained = run.spec, (run.info.get("transfer") or {}).get("pretrained")
    cache = run.directory.parent.parent  # <output>/runs/<run_id>: the runner's cache_dir
    if pretrained and not pretrained.startswith("weights:"):
        if not (pretrained_dir(cache, pretrained) / records.DONE).exists():
            raise UserError(
                f"{run.directory}: its pretraining {pretrained} is not in "
                f"{pretrained_dir(cache, pretrained)}; the start is rebuilt from that cache"
            )
    algorithm = build_algorithm(spec)
    dataset = load_dataset(spec.dataset, data_dir, spec.data_seed, spec.size)
    train_envs = [name for name in dataset.envs if name not in spec.test_envs]
    data = RunData(spec, dataset, run.splits, train_envs, cache, torch.device("cpu"))
    setup = algorithm.prepare_run(data)
    if (setup or {}).get("pretrained") != pretrained:
        raise UserError(
            f"{run.directory}: rebuilding its start loaded pretraining "
            f"{(setup or {}).get('pretrained')}, but the run records {pretrained}"
        )
    return algorithm.eval()


def _rows(run: TrainedRun, part: str) -> tuple[Tensor, Tensor]:
    """The ``part`` ("in": trained on; "out": validation) rows of the training environments."""
    envs = [name for name in run.envs if name not in run.spec.test_envs]
    xs, ys = zip(*(run.envs[name].batch(run.splits[name][part]) for name in envs))
    return torch.cat(xs), torch.cat(ys)


def landscape(run: TrainedRun, start: Algorithm) -> dict[str, Any]:
    """``line``: train (``in``) and validation (``out``) loss at start + alpha (final - start);
    ``slice``: train loss at final + a d1 + b d2."""
    model = run.algorithm.eval()
    params: list[nn.Parameter] = list(model.network.parameters())
    final = [p.detach().clone() for p in params]
    begin = [p.detach().clone() for p in start.network.parameters()]
    data = {part: _rows(run, part) for part in ("in", "out")}

    @torch.no_grad()
    def loss(part: str) -> float:
        x, y = data[part]
        return float(classification_loss(model.predict(x), y))

    line = along_line(
        params, begin, final, {"train": lambda: loss("in"), "validation": lambda: loss("out")}
    )
    generator = torch_generator("transfer_landscape", run.spec.trial_seed)
    directions = filter_normalised(final, generator), filter_normalised(final, generator)
    grid = on_slice(params, final, directions, lambda: loss("in"))
    return {
        "run_id": run.run_id,
        "recipe": run.spec.algorithm,
        "overrides": dict(run.spec.overrides),
        "line": line,
        "slice": {"axis": SLICE.tolist(), "train": grid},
    }


def compare(
    directories: Sequence[str | Path], out: Path, data_dir: str | None = None
) -> dict[str, Any]:
    """Landscapes of the finished runs in ``directories`` (one task and trial): ``out`` (PNG)
    and ``out`` with suffix .json (the numbers)."""
    runs = [_finished(Path(d), data_dir) for d in directories]
    check_comparable(runs)
    found = [landscape(run, starting_algorithm(run, data_dir)) for run in runs]
    out.parent.mkdir(parents=True, exist_ok=True)
    records.write_json(out.with_suffix(".json"), found)
    spec = runs[0].spec
    title = f"{spec.dataset}, trial {spec.trial_seed}: target training loss"
    draw(found, [run["recipe"] for run in found], title, "target loss (in / out split)", out)
    return {"figure": str(out), "runs": found}


def find_runs(output_dir: Path, task: str, recipes: Sequence[str], trial_seed: int) -> list[Path]:
    """The one finished run per recipe of ``task`` and ``trial_seed`` (default hparams) under
    ``output_dir``, in the order of ``recipes``."""
    infos = [(p.parent, records.read_json(p)) for p in sorted(output_dir.glob("runs/*/spec.json"))]
    found = []
    for recipe in recipes:
        hits = [
            d
            for d, info in infos
            if info["spec"]["algorithm"] == recipe
            and info["spec"]["dataset"] == task
            and info["spec"]["trial_seed"] == trial_seed
            and info["spec"]["hparams_seed"] == 0
        ]
        if len(hits) != 1:
            raise UserError(
                f"{output_dir}: {len(hits)} runs of {recipe} on {task}, trial {trial_seed} "
                "(need exactly one); pass run directories to --runs instead"
            )
        found.extend(hits)
    return found
