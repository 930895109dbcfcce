"""Combining the finished runs of one trial after a sweep: prediction ensembles and DiWA.

- ``ensemble``: the mean of the members' predicted class probabilities.
- ``diwa`` (Rame et al., NeurIPS 2022, "Diverse Weight Averaging"): the uniform average of
  the members' weights (floating-point state: parameters and BatchNorm statistics). It
  relies on the members sharing their initialisation (the paper's shared linear-probed
  start), which keeps them in one linearly connected basin; runs that start from
  different weights are refused. bench seeds initialisation with (trial, hparams seed),
  so the hparams samples of a sweep start apart; runs that differ only in overrides at
  the same seeds share theirs.

Members are the runs of one cell trial: same dataset protocol, algorithm, test
environments and trial seed, typically its hparams samples (data is drawn per trial, so
runs of different trials have no common test set). The final weights (the checkpoint a
finished run keeps) are combined and evaluated on every split the runs evaluate; the
result is one record at the runs' last step, a row ``ensemble(erm)`` / ``diwa(erm)`` with
one value per trial, so trials give its mean ± std as for any row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from bench.errors import UserError
from bench.evaluation import evaluate
from bench.posthoc import results
from bench.posthoc.trained import TrainedRun, build_algorithm, load_trained

METHODS = ("ensemble", "diwa")
SAME = ("dataset", "test_envs", "trial_seed", "size", "steps", "holdout_fraction", "data")


class Ensemble(nn.Module):
    """Predicts the log of the members' mean probability (one logit for binary heads)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def predict(self, x: Tensor) -> Tensor:
        logits = [m.predict(x) for m in self.members]
        if logits[0].shape[1] == 1:
            return torch.logit(torch.stack([z.sigmoid() for z in logits]).mean(0))
        return torch.stack([z.softmax(1) for z in logits]).mean(0).log()


def check_members(runs: Sequence[TrainedRun]) -> None:
    if len(runs) < 2:
        raise UserError(f"combining needs at least 2 finished runs, got {len(runs)}")
    first = runs[0].info["spec"]
    for run in runs[1:]:
        spec = run.info["spec"]
        differ = [k for k in SAME if spec.get(k) != first.get(k)] + (
            ["algorithm"] if spec["algorithm"] != first["algorithm"] else []
        )
        if differ:
            raise UserError(
                f"runs {runs[0].run_id} and {run.run_id} differ in {', '.join(differ)}; "
                "combine the runs of one trial of one cell"
            )


def check_shared_init(runs: Sequence[TrainedRun]) -> None:
    """DiWA's precondition: every member starts from the same weights (rebuilt as the runner
    seeds them, and the same pretraining for transfer recipes); UserError naming the first
    difference otherwise."""
    reference = dict(build_algorithm(runs[0].spec).named_parameters())
    for run in runs[1:]:
        if run.info.get("transfer") != runs[0].info.get("transfer"):
            raise UserError(
                f"diwa averages runs that share their initialisation; {runs[0].run_id} and "
                f"{run.run_id} start from different pretrained weights: use ensemble"
            )
        start = dict(build_algorithm(run.spec).named_parameters())
        differ = next(
            (
                k
                for k, v in reference.items()
                if k not in start or start[k].shape != v.shape or not torch.equal(start[k], v)
            ),
            None,
        )
        if differ is not None:
            raise UserError(
                f"diwa averages runs that share their initialisation; {runs[0].run_id} and "
                f"{run.run_id} start from different {differ} (bench seeds init with trial and "
                "hparams seed): use ensemble"
            )


def averaged_weights(runs: Sequence[TrainedRun]) -> nn.Module:
    """The first member holding the uniform average of every member's floating-point state."""
    states = [r.algorithm.state_dict() for r in runs]
    mean = {
        k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
        for k, v in states[0].items()
        if isinstance(v, Tensor)
    }
    model = runs[0].algorithm
    model.load_state_dict({**states[0], **mean})
    return model


def combine(
    directories: Sequence[str | Path],
    method: str,
    output_dir: str | Path,
    data_dir: str | None = None,
    command: str = "",
) -> Path:
    """Combine the finished runs in ``directories``; the result goes to
    ``<output_dir>/combined/<id>.json`` (returned)."""
    if method not in METHODS:
        raise UserError(f"unknown combination {method!r}; known: {', '.join(METHODS)}")
    runs = [load_trained(d, data_dir) for d in directories]
    check_members(runs)
    if method == "diwa":
        check_shared_init(runs)
        model: Any = averaged_weights(runs)
    else:
        model = Ensemble([r.algorithm for r in runs])
    first = runs[0]
    scores = evaluate(model, first.envs, first.splits, 128, first.skip)
    record = {**first.last, "eval": scores, "posthoc": {"method": method}, "train": {}}
    spec = {**first.info["spec"], "hparams_seed": 0}
    algorithm = first.spec.algorithm
    result = results.make_result(
        method,
        {"method": method},
        f"{method}({algorithm})",
        [(r.run_id, r.last["step"]) for r in runs],
        spec,
        [record],
        command,
        results.base_seeds({r.run_id: r.info["spec"] for r in runs}),
    )
    return results.write_result(Path(output_dir) / results.COMBINED, result)
