"""Training: the Trainer loop, atomic checkpoints with exact resume, and training plots.

    from minillm.training import Trainer, TrainingArguments, plot_history
"""
from .checkpoint import (CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint,
                         verify_checkpoint)
from .plots import plot_history
from .trainer import (EarlyStoppingCallback, Trainer, TrainerCallback, TrainerState,
                      TrainingArguments, default_compute_loss)

__all__ = ["CheckpointError", "CheckpointManager", "save_checkpoint", "load_checkpoint",
           "verify_checkpoint", "Trainer", "TrainingArguments", "TrainerState",
           "TrainerCallback", "EarlyStoppingCallback", "default_compute_loss", "plot_history"]
