"""SWAD's loss-valley detection (Cha et al., NeurIPS 2021), as pure bookkeeping over segments.

Training is cut into segments at the evaluation steps; each segment's weights are the
uniform average of its iterates, tagged with the training-domain validation loss at its
end. The first segment that is the minimum of the last ``n_converge`` ones opens the
valley (threshold = their mean loss x (1 + ``tolerance_ratio``)); the window then grows
segment by segment while the smallest loss of the next ``n_tolerance`` segments stays
under the threshold, and closes for good (a "dead valley") when it does not. The final
model is the uniform average of the segments added.

Facts and numbers from the authors' code (github.com/khanrc/swad, ``swad.py`` LossValley,
``config.yaml``: n_converge 3, n_tolerance 6, tolerance_ratio 0.3), kept as it is,
including its quirks: at convergence with ``n_tolerance > n_converge`` the code adds
``Q[start_idx + 1:]``, the segments of the first ``n_tolerance - n_converge + 1`` of the last
``n_tolerance`` that follow the last one above the threshold, skipping the first of them;
early in training that slice can reach past the converging segment, and a segment added
then is added again when the window reaches it (it weighs twice).
A run that never converges averages nothing: its last segment stands in (as the code's
"return last model instead"). The code stops training at a dead valley; bench trains the
run to its end (the raw model's records must be whole) and the average stops growing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Valley:
    """Which segments (by index, in order of evaluation) the SWAD average takes."""

    n_converge: int = 3
    n_tolerance: int = 6
    tolerance_ratio: float = 0.3
    losses: list[float] = field(default_factory=list)
    converged_at: int | None = None
    threshold: float | None = None
    dead: bool = False

    def _last(self, n: int) -> list[int]:
        end = len(self.losses)
        return list(range(max(0, end - n), end))

    def update(self, loss: float) -> list[int]:
        """Add the next segment's validation loss; returns the segments to average now."""
        if self.dead:
            return []
        self.losses.append(float(loss))
        converge, smooth = self._last(self.n_converge), self._last(self.n_tolerance)
        if self.converged_at is None:
            return self._try_converge(converge, smooth)
        if smooth[0] < self.converged_at:
            return []
        if min(self.losses[i] for i in smooth) > self.threshold:
            self.dead = True
            return []
        return [smooth[0]]

    def _try_converge(self, converge: list[int], smooth: list[int]) -> list[int]:
        if len(converge) < self.n_converge:
            return []
        window = [self.losses[i] for i in converge]
        if window.index(min(window)) != 0:
            return []
        self.converged_at = converge[0]
        self.threshold = sum(window) / len(window) * (1.0 + self.tolerance_ratio)
        if self.n_tolerance < self.n_converge:
            return converge[1 : 1 + self.n_converge - self.n_tolerance]
        if self.n_tolerance == self.n_converge:
            return []
        head = smooth[: self.n_tolerance - self.n_converge + 1]
        start = 0
        for j in reversed(range(len(head))):
            if self.losses[head[j]] > self.threshold:
                start = j + 1
                break
        return head[start + 1 :]

    def finish(self) -> list[int]:
        """The segments to add at the end of training (the window's tail under the threshold)."""
        if self.converged_at is None or self.dead:
            return []
        smooth = self._last(self.n_tolerance)[1:]
        out = []
        while smooth and min(self.losses[i] for i in smooth) <= self.threshold:
            out.append(smooth.pop(0))
        return out

    def live(self) -> list[int]:
        """Segments a later ``update`` or ``finish`` may still add: keep their weights."""
        return [] if self.dead else self._last(max(self.n_converge, self.n_tolerance))

    def state(self) -> dict[str, Any]:
        return asdict(self)
