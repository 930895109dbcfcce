"""PCGrad, gradient surgery (Yu et al., NeurIPS 2020), on a hard-shared network.

On the shared trunk, each task's gradient g_i is projected, in a random order of the other
tasks, onto the normal plane of every g_j it conflicts with (g_i . g_j < 0):
``g_i <- g_i - (g_i . g_j) / ||g_j||^2 g_j``, with g_j the original gradient (Yu et al.'s
Algorithm 1). The trunk steps along the mean of the projected gradients (the mean, like the
uniform objective, so ``lr`` keeps its meaning); heads get their own tasks' gradients.
"""

from typing import Any

import torch
from torch import Tensor

from bench.multitask.method import Batches, SharedTrunk, flat_gradients, register_method


def project_conflicts(grads: list[Tensor], orders: list[list[int]]) -> list[Tensor]:
    """Each ``grads[i]`` with its conflicting components along ``grads[j]`` (j in
    ``orders[i]``, in that order) removed."""
    out = []
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g = g - dot / grads[j].pow(2).sum() * grads[j]
        out.append(g)
    return out


@register_method("pcgrad")
class PCGrad(SharedTrunk):
    VERSION = 1

    def update(self, batches: Batches) -> dict[str, Any]:
        losses = self.task_losses(batches)
        shared = self.shared_parameters()
        grads = flat_gradients(losses, shared) if shared else []  # a linear trunk shares nothing
        cosines = self.gradient_cosines(losses, grads)
        total = self.objective(losses)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # heads' gradients; the trunk's are replaced below
        if shared:
            n = len(grads)
            orders = [[j for j in torch.randperm(n).tolist() if j != i] for i in range(n)]
            surgery = torch.stack(project_conflicts(grads, orders)).mean(0)
            offset = 0
            for p in shared:
                p.grad = surgery[offset : offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        self.optimizer.step()
        self.step += 1
        return self.summary(total, losses, cosines)
