"""Lightning training of the DMHA head: AdamW, LR halving on plateau, early stopping on the dev criterion
(macro-F1, the attributes' mean CCC, or their sum)."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from .config import TrainConfig
from .encoders.base import SpeechEncoder
from .fileio import atomic_path
from .frame_dropout import drop_frames
from .figures import MONITORS
from .losses import TargetLoss
from .metrics import concordance, macro_f1
from .model import DMHA
from .speaker_norm import batch_speaker_moments
from .batches import pad_time

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_waves(encoder: SpeechEncoder, waves, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Online mode: the frozen encoder on a batch of (augmented) waveforms → padded hidden states
    (B, L, T, D) and frame mask (B, T)."""
    return pad_time(encoder.encode(list(waves)), axis=1, device=device)  # (B, L, T, D), (B, T)


class DMHAModule(L.LightningModule):
    """Wraps the head with its loss and optimiser; dev scores are computed over the whole dev split:
    macro-F1 from a confusion matrix, each attribute's CCC from all its dev predictions."""

    def __init__(self, model: DMHA, loss: TargetLoss, num_classes: int, train_config: TrainConfig,
                 speech_encoder: SpeechEncoder | None = None, criterion: str = "macro_f1"):
        super().__init__()
        self.model, self.loss, self.cfg, self.criterion = model, loss, train_config, criterion
        self.speech_encoder = speech_encoder  # online mode only; a plain object, so never trained or saved
        self.val_confusion = MulticlassConfusionMatrix(num_classes)  # syncs across DDP ranks
        self._val_attributes: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def monitor(self) -> str:
        return MONITORS[self.criterion]

    def _speech(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "waves" in batch:  # online extraction: the frozen encoder sees this step's augmented audio
            return encode_waves(self.speech_encoder, batch["waves"], self.device)
        return batch["speech"], batch["speech_mask"]

    def _outputs(self, batch: dict, frame_dropout: float = 0.0):
        speech, speech_mask = drop_frames(*self._speech(batch), frame_dropout)
        # Speaker moments come from the whole stored utterances, so dropped frames do not change them.
        return self.model(speech, speech_mask, batch["text"], batch["text_mask"], speaker=batch_speaker_moments(batch))

    def batch_loss(self, batch: dict, frame_dropout: float = 0.0) -> torch.Tensor:
        """The training loss of one batch (also what the benchmarks time, outside Lightning)."""
        out = self._outputs(batch, frame_dropout)
        return self.loss(out.logits, out.attributes, batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.batch_loss(batch, self.cfg.frame_dropout)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch["target"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self._outputs(batch)
        self.log("val_loss", self.loss(out.logits, out.attributes, batch), on_epoch=True,
                 batch_size=len(batch["target"]))
        self.val_confusion.update(out.logits.argmax(-1), batch["target"])
        if out.attributes is not None:
            self._val_attributes.append((out.attributes.detach().float(), batch["attributes"].float()))

    def _dev_ccc(self) -> torch.Tensor:
        """Mean over attributes of the CCC over the whole dev split (gathered from every DDP rank)."""
        pred = torch.cat([p for p, _ in self._val_attributes])
        target = torch.cat([t for _, t in self._val_attributes])
        self._val_attributes = []
        if self.trainer.world_size > 1:  # ranks may hold one item more than others: pad with NaN targets
            most = int(self.all_gather(torch.tensor(len(pred), device=pred.device)).max())
            pad = most - len(pred)
            pred = torch.cat([pred, pred.new_zeros(pad, pred.shape[1])])
            target = torch.cat([target, target.new_full((pad, target.shape[1]), float("nan"))])
            pred, target = (self.all_gather(x).flatten(0, 1) for x in (pred, target))
        return concordance(pred, target).mean()  # NaN targets (empty cells, padding) are left out

    def on_validation_epoch_end(self) -> None:
        # compute() already sums the confusion over DDP ranks, so every rank sees the same score.
        scores = {"macro_f1": torch.tensor(macro_f1(self.val_confusion.compute()))}
        self.val_confusion.reset()
        if self._val_attributes:
            scores["ccc"] = self._dev_ccc()
        if self.criterion == "sum":
            scores["sum"] = scores["macro_f1"] + scores["ccc"]
        for name, value in scores.items():
            self.log(MONITORS[name], value, prog_bar=name == self.criterion, sync_dist=True)
        score = scores[self.criterion]
        # The plateau schedule steps here, not in Lightning's epoch-end hook, so the checkpoint written
        # right after validation already holds this epoch's step and a resumed run stays on schedule.
        if not self.trainer.sanity_checking:
            self.plateau.step(float(score))
            self.log("lr", self.plateau.optimizer.param_groups[0]["lr"], sync_dist=False)  # the LR for the next epoch

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dmha_plateau"] = self.plateau.state_dict()
        # Random-number states travel with the checkpoint, so a resumed run draws the same dropout
        # masks and crops as an uninterrupted one (stored as tensors and ints: weights_only-safe).
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["dmha_rng"] = {"torch": torch.get_rng_state(), "numpy": [torch.from_numpy(keys.astype(np.int64)),
                                                                             pos, has_gauss, cached],
                                  "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._plateau_state = checkpoint.get("dmha_plateau")  # applied once the scheduler exists
        state = checkpoint.get("dmha_rng")
        if state is None:  # a checkpoint from before dmha stored them: resumes, not bit-exactly
            return
        torch.set_rng_state(state["torch"])
        keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate((state["python_version"], tuple(state["python"]), None))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(parameter_groups(self.model, self.cfg), lr=self.cfg.lr,
                                      weight_decay=self.cfg.weight_decay)
        # torch counts `patience` bad epochs before acting; "halve after N epochs without gain" is N-1.
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=self.cfg.lr_factor, patience=max(self.cfg.lr_patience - 1, 0))
        if getattr(self, "_plateau_state", None):
            self.plateau.load_state_dict(self._plateau_state)
        return optimizer


def parameter_groups(model: DMHA, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: the head; with `train.layer_lr` the layer-sum logits in their own group (own LR, no
    weight decay: decoupled decay pulls the logits to zero, i.e. to uniform weights over the layers,
    which is why with one group they stay within ±0.02 of uniform while the probe's best layer is one);
    with live encoder layers (encoders.finetune_layers) one group per layer at `train.encoder_lr`,
    times `train.encoder_lr_decay` for each layer below the top."""
    special: list[dict] = []
    if cfg.layer_lr:
        special.append({"params": [model.layer_sum.logits], "lr": cfg.layer_lr, "weight_decay": 0.0})
    if model.top is not None:
        layers = list(model.top.layers)
        for depth, layer in enumerate(reversed(layers)):  # depth 0 = the top layer
            params = [p for p in layer.parameters() if p.requires_grad]
            if depth == 0 and model.top.final_norm is not None:
                params += list(model.top.final_norm.parameters())
            special.append({"params": params, "lr": cfg.encoder_lr * cfg.encoder_lr_decay ** depth})
    taken = {id(p) for group in special for p in group["params"]}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return [{"params": rest}, *special]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file and renamed into place: a process killed while saving
    leaves the previous last.ckpt intact instead of half a file that resuming would choke on."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def _cpu_has_bf16() -> bool:
    """bf16 matrix units (AMX, AVX512-BF16): without them bf16 autocast on CPU is emulated and far
    slower than fp32 (measured 20x slower on an AVX2-only EPYC)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16-mixed where the hardware runs bf16 natively (recent GPUs, CPUs with AMX or
    AVX512-BF16), else fp16-mixed on older GPUs and 32-true on other CPUs."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if _cpu_has_bf16() else "32-true"


def fit(module: DMHAModule, train_loader: DataLoader, dev_loader: DataLoader, run_dir: Path,
        cfg: TrainConfig, progress: bool = True) -> tuple[Path, float, int] | None:
    """Train, resuming from run_dir/checkpoints/last.ckpt when present; return (best ckpt, its dev score, epoch)
    on the main process, None on the other DDP ranks (their work ends with training)."""
    ckpt_dir = run_dir / "checkpoints"
    # deterministic=True makes CUDA refuse cuBLAS's non-deterministic workspace unless this is set.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monitor = module.monitor
    best = ModelCheckpoint(ckpt_dir, filename="best", monitor=monitor, mode="max", save_weights_only=False,
                           save_on_train_epoch_end=False)
    # Lightning's save_last only writes when a top-k checkpoint is written, i.e. when dev improved: a
    # kill after a plateau would lose every epoch since. This one rewrites last.ckpt after every
    # epoch's validation (so early stopping and the LR schedule have seen that epoch).
    latest = ModelCheckpoint(ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                             save_on_train_epoch_end=False, enable_version_counter=False)
    callbacks = [best, latest, EarlyStopping(monitor, mode="max", patience=cfg.early_stop_patience,
                                               check_on_train_epoch_end=False)]  # decided before the checkpoints
    if cfg.ema_decay:  # swaps the average in for validation and puts it in the checkpoints' state_dict
        callbacks.append(EMAWeightAveraging(decay=cfg.ema_decay))
    if progress:
        callbacks.append(TQDMProgressBar(leave=True))
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        precision=resolve_precision(cfg.precision, cfg.accelerator), callbacks=callbacks, logger=loggers(run_dir, cfg.logger),
        enable_progress_bar=progress, enable_model_summary=False, deterministic=True,
        num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=run_dir,
        use_distributed_sampler=False,  # our length-bucketed samplers split batches across ranks themselves
        plugins=[AtomicCheckpointIO()],
    )
    last = ckpt_dir / "last.ckpt"
    resume = last if last.exists() else None
    if resume:
        log.info("resuming from %s", resume)
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's bars write to stdout; keep stdout for results
        trainer.fit(module, train_loader, dev_loader, ckpt_path=resume, weights_only=True)
    if not trainer.is_global_zero:
        return None
    best_path = Path(best.best_model_path) if best.best_model_path else last
    score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
    epoch = int(torch.load(best_path, map_location="cpu", weights_only=True)["epoch"])
    return best_path, score, epoch


def loggers(run_dir: Path, kind: str) -> list:
    """Lightning loggers: the CSV log (reports draw their curves from it) and, when asked, TensorBoard's."""
    out = [CSVLogger(run_dir, name="logs", version="")]
    if kind == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            out.append(TensorBoardLogger(run_dir, name="logs", version="tensorboard", default_hp_metric=False))
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(f"train.logger=tensorboard needs TensorBoard: pip install 'dmha[tensorboard]' ({err})") from None
    return out


def load_best_weights(model: DMHA, checkpoint: Path) -> None:
    """Copy the head's weights from a Lightning checkpoint (read with weights_only=True)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
