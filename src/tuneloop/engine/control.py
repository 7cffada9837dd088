"""What the loop does after the current optimizer step, set from outside the loop's own code.

Early stopping, a pause signal, a listener (a CLI key, a hyperparameter search's pruner) all say what they
want by setting a field here; the loop reads it after every optimizer step and clears what it has done.
Modelled on transformers' `TrainerControl`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Control:
    stop: bool = False
    """End the run after this step: the final model is written (from the best checkpoint with early stopping)."""
    pause: bool = False
    """Write a checkpoint and stop; `resume` continues exactly from it. No final model."""
    save: bool = False
    """Write a checkpoint now and carry on (cleared once saved)."""
    reason: str | None = None
    """Why the run stops: 'early_stop', 'pruned', or what the caller names. Written into the `done` event."""

    def request_stop(self, reason: str) -> None:
        self.stop, self.reason = True, reason

    def request_pause(self) -> None:
        """Safe to call from a signal handler or another thread."""
        self.pause = True
