"""Training: the Trainer loop, atomic checkpoints with exact resume, mixed precision, plots.

    from minillm.training import Trainer, TrainingArguments, plot_history
    from minillm.training import MixedPrecision, GradScaler     # float16 + float32 masters
"""
from .amp import GradScaler, MixedPrecision
from .checkpoint import (CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint,
                         verify_checkpoint)
from .plots import plot_history
from .trainer import (EarlyStoppingCallback, Trainer, TrainerCallback, TrainerState,
                      TrainingArguments, TrainingDivergedError, default_compute_loss)

__all__ = ["CheckpointError", "CheckpointManager", "save_checkpoint", "load_checkpoint",
           "verify_checkpoint", "Trainer", "TrainingArguments", "TrainerState",
           "TrainerCallback", "EarlyStoppingCallback", "default_compute_loss", "plot_history",
           "GradScaler", "MixedPrecision", "TrainingDivergedError"]
