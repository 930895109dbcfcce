"""The subprocess of a side-by-side benchmark: runs one training program and times it from outside.

Started by ``_side_by_side.timed_child`` as ``python _timed_child.py CONFIG_JSON``; it imports
only the standard library and torch, so the program under test (a reference's script or
``python -m bench``) starts as it would on its own. CONFIG holds:

- ``threads``: torch threads; ``argv``: the program's ``sys.argv``;
- ``module`` or ``path``: what to run as ``__main__`` (``runpy``), with the working directory
  first on ``sys.path`` as for ``python -m`` / ``python -c``;
- ``cuda_noop``: make ``.cuda()`` a no-op (reference code written for GPUs);
- ``stubs``: ``{module: [names]}`` imported by the reference but unused by the protocol
  timed; stood in for only when not installed, and each name raises if it is ever called;
- ``evaluations``: ``["module:function"]`` evaluation functions whose first argument is the
  model (its ``predict`` is called per batch): each call is timed and its images counted.

It prints one line ``TIMES {json}``: the (wall, CPU) stamp of every ``torch.optim.Adam.step``
call, one ``[steps so far, wall s, CPU s, images]`` row per evaluation call, and the
process's CPU seconds at the end.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import runpy
import sys
import time
import types
from typing import Any, Callable

import torch


def stub_missing(stubs: dict[str, list[str]]) -> None:
    """Stand-ins for modules that are imported but not installed; using one raises at once."""
    tops = {name.split(".")[0] for name in stubs}
    missing = {top for top in tops if importlib.util.find_spec(top) is None}
    for name, names in stubs.items():
        if name.split(".")[0] not in missing:
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            module = sys.modules.setdefault(
                ".".join(parts[:i]), types.ModuleType(".".join(parts[:i]))
            )
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)
        for attr in names:
            setattr(sys.modules[name], attr, _unavailable(f"{name}.{attr}"))


def _unavailable(qualname: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{qualname} is a stand-in: not installed, and unused by this benchmark")

    return fail


def main(config: dict[str, Any]) -> None:
    torch.set_num_threads(config["threads"])
    stamps: list[tuple[float, float]] = []
    evals: list[list[float]] = []

    adam_step = torch.optim.Adam.step

    def timed_step(self: torch.optim.Adam, *args: Any, **kwargs: Any) -> Any:
        stamps.append((time.perf_counter(), time.process_time()))
        return adam_step(self, *args, **kwargs)

    def timed_evaluation(evaluate: Callable[..., Any]) -> Callable[..., Any]:
        def timed(model: Any, *args: Any, **kwargs: Any) -> Any:
            images, predict = [0], model.predict

            def counting(x: Any, *a: Any, **k: Any) -> Any:
                images[0] += len(x)
                return predict(x, *a, **k)

            model.predict = counting
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return evaluate(model, *args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                evals.append([len(stamps), wall, cpu, images[0]])
                del model.predict

        return timed

    torch.optim.Adam.step = timed_step
    if config.get("cuda_noop"):
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    stub_missing(config.get("stubs", {}))
    for target in config.get("evaluations", []):
        module_name, name = target.split(":")
        module = importlib.import_module(module_name)
        setattr(module, name, timed_evaluation(getattr(module, name)))
    sys.argv = config["argv"]
    try:
        if config.get("module"):
            runpy.run_module(config["module"], run_name="__main__")
        else:
            runpy.run_path(config["path"], run_name="__main__")
    except SystemExit:
        pass
    times = {"stamps": stamps, "evals": evals, "cpu": time.process_time()}
    print("TIMES " + json.dumps(times), flush=True)


if __name__ == "__main__":
    sys.path[0] = ""  # the working directory, as for python -c, not this file's folder
    main(json.loads(sys.argv[1]))
