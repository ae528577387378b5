"""TRL's SFTTrainer with safetensors checkpoints, the output layer at labelled positions only, and NEFTune.

Optimizer, scheduler and RNG state are checkpointed in safetensors instead of pickle; on a CPU the
output layer and the loss run only where a token carries a label (:mod:`tunescope.train.loss`); NEFTune
noise is scaled by each example's own length however the batch is laid out (:mod:`tunescope.train.neftune`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import PeftModel
from trl import SFTTrainer

from tunescope.train import checkpoint as ckpt
from tunescope.train.loss import score_labelled_positions_only
from tunescope.train.neftune import noisy_embeddings


class SafetensorsSFTTrainer(SFTTrainer):
    """An ``SFTTrainer`` whose checkpoints can be resumed without unpickling anything.

    Only the single-process and DDP paths are replaced; DeepSpeed, FSDP and XLA save through their
    own engines and keep the Trainer's behaviour.

    Args:
        *args: As for ``SFTTrainer``.
        logits_at_labels_only: Apply the output layer only at labelled positions on a CPU too (see
            :mod:`tunescope.train.loss`); False keeps TRL's path.
        neftune_noise_alpha: Train with NEFTune noise of this scale on the input embeddings (None: none).
        **kwargs: As for ``SFTTrainer``.
    """

    def __init__(
        self, *args: Any, logits_at_labels_only: bool = True, neftune_noise_alpha: float | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.logits_at_labels_only = logits_at_labels_only and score_labelled_positions_only(
            self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        )
        self.noise_alpha = neftune_noise_alpha

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """As ``SFTTrainer.train``, with NEFTune noise on the embeddings while it runs when asked for."""
        if self.noise_alpha is None:
            return super().train(*args, **kwargs)
        with noisy_embeddings(self.model, self.noise_alpha):
            return super().train(*args, **kwargs)

    def _uses_own_checkpoint_engine(self) -> bool:
        return bool(self.is_deepspeed_enabled or self.is_fsdp_enabled or getattr(self.args, "tpu_num_cores", None))

    def _rng_file(self, directory: str) -> Path:
        suffix = "" if self.args.world_size <= 1 else f"_{self.args.process_index}"
        return Path(directory) / ckpt.RNG_FILE.format(suffix=suffix)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self._uses_own_checkpoint_engine():
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            ckpt.save_optimizer(Path(output_dir) / ckpt.OPTIMIZER_FILE, self.optimizer, self.lr_scheduler)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        if self._uses_own_checkpoint_engine():
            return super()._load_optimizer_and_scheduler(checkpoint)
        path = Path(checkpoint) / ckpt.OPTIMIZER_FILE
        if path.is_file():
            ckpt.load_optimizer(path, self.optimizer, self.lr_scheduler, self.args.device)

    def _save_rng_state(self, output_dir: str) -> None:
        if self._uses_own_checkpoint_engine():
            return super()._save_rng_state(output_dir)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        ckpt.save_rng_state(self._rng_file(output_dir))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        if self._uses_own_checkpoint_engine():
            return super()._load_rng_state(checkpoint)
        path = self._rng_file(checkpoint)
        if path.is_file():
            ckpt.load_rng_state(path)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        # The Trainer pickles its arguments into every checkpoint; nothing reads them back.
        for args_file in Path(self.args.output_dir).glob("checkpoint-*/training_args.bin"):
            args_file.unlink(missing_ok=True)
