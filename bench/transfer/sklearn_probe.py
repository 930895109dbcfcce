"""A linear probe fitted by scikit-learn: logistic regression on frozen features, C chosen on
validation.

The classic evaluation of a representation (e.g. CLIP's linear probes): standardise
the frozen features of the target training split, fit L2-regularised logistic
regression (lbfgs, deterministic) for each C in ``C_GRID``, keep the C with the best
accuracy on the target validation split (ties: the smaller C), and write the fitted
model into the network's linear head, so evaluation, records and selection are the
harness's own. The validation split only picks C; the head is fitted on training data.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.datasets.base import EnvData
from bench.errors import UserError

C_GRID = tuple(10.0**k for k in range(-4, 5))
ABSENT_BIAS = -1e4  # logit bias of a class with no training example


def frozen_features(
    featurizer: nn.Module, env: EnvData, idx: Tensor, device: torch.device, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of rows ``idx`` of ``env`` (featurizer in eval mode, no augmentation)."""
    was_training = featurizer.training
    featurizer.eval()
    feats, labels = [], []
    with torch.inference_mode():
        for chunk in idx.split(batch_size):
            x, y = env.batch(chunk)
            feats.append(featurizer(x.to(device)).float().cpu())
            labels.append(y.cpu())
    featurizer.train(was_training)
    return torch.cat(feats).numpy().astype(np.float64), torch.cat(labels).numpy()


def fit_logistic_head(
    head: nn.Linear, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Fit ``head`` by logistic regression over ``C_GRID``; returns the chosen C and every C's
    validation accuracy."""
    # lazy: scikit-learn is slow to import and only probe=sklearn uses it
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_val, y_val) = train, val
    if len(np.unique(y_train)) < 2:
        raise UserError(
            "sklearn probe: the target training split has only class "
            f"{np.unique(y_train).tolist()}; logistic regression needs two"
        )
    scaler = StandardScaler().fit(x_train)
    z_train, z_val = scaler.transform(x_train), scaler.transform(x_val)
    models, scores = {}, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for c in C_GRID:
            models[c] = LogisticRegression(C=c, max_iter=2000).fit(z_train, y_train)
            scores[c] = float(models[c].score(z_val, y_val))
    best = max(C_GRID, key=lambda c: (scores[c], -c))
    model = models[best]
    weight = (
        model.coef_ / scaler.scale_
    )  # undo the standardisation: w.((x - mu) / s) + b = (w / s).x + b - (w / s).mu
    bias = model.intercept_ - weight @ scaler.mean_
    n_out, classes = head.out_features, model.classes_.tolist()
    if (
        len(classes) == 2 and n_out != 1
    ):  # sklearn's one binary row is the logit of classes[1]: softmax over [0, w]
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    if n_out == 1 and classes != [0, 1]:
        raise UserError(
            f"sklearn probe: the target training split has classes {classes}, expected [0, 1]"
        )
    if (
        n_out > 1
    ):  # a class absent from the training split gets a zero row and a bias that never wins
        full_weight, full_bias = np.zeros((n_out, weight.shape[1])), np.full(n_out, ABSENT_BIAS)
        full_weight[classes], full_bias[classes] = weight, bias
        weight, bias = full_weight, full_bias
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
    return {
        "C": best,
        "val_acc": {f"{c:g}": s for c, s in scores.items()},
        "n_train": len(y_train),
        "absent_classes": sorted(set(range(max(n_out, 2))) - set(classes)),
        "n_val": len(y_val),
        "convergence_warnings": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
    }
