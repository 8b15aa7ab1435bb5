"""The training loop: one code path for one CPU, one GPU, several GPUs and several machines.

``train(config, reporter=...)`` is the library entry point (the CLI and the jobs layer call it). In a
multi-process launch (torchrun) every process calls it; the main process writes all files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rs_vlm_app import __version__
from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.reporting import NullReporter, Reporter
from rs_vlm_app.training import checkpoint, distributed, model_setup, rundir
from rs_vlm_app.training.config import TrainConfig
from rs_vlm_app.training.data import CaptionTable, open_caption_data
from rs_vlm_app.training.hooks import (
    EvalContext,
    EvalHook,
    RetrievalHook,
    SeloHook,
    ZeroShotHook,
    finite,
)
from rs_vlm_app.training.loader import BatchPlan, Collate, ImageTextDataset, make_loader
from rs_vlm_app.training.lora import apply_lora, has_lora, merged_state_dict
from rs_vlm_app.training.losses import Losses
from rs_vlm_app.training.metrics_log import MetricsLog
from rs_vlm_app.training.optim import learning_rate, make_optimizer, set_learning_rate

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100)


@dataclass
class TrainResult:
    """Where a call to :func:`train` left the run."""

    run_dir: Path
    steps: int
    total_steps: int
    finished: bool
    model_path: Path | None
    metrics: dict[str, float] = field(default_factory=dict)


def train(config: TrainConfig, *, reporter: Reporter | None = None,
          extra_hooks: Sequence[EvalHook] = ()) -> TrainResult:
    """Fine-tune a CLIP or CoCa model as ``config`` says, continuing its run directory if it holds this run.

    Reports progress (stage "train": optimizer steps done of the total) and log lines to
    ``reporter``; a cancel request stops at the next step after writing a resumable checkpoint and
    raises :class:`~rs_vlm_app.errors.Cancelled`. ``extra_hooks`` are evaluations run with the
    built-in ones (see :mod:`rs_vlm_app.training.hooks`).
    """
    reporter = reporter or NullReporter()
    config.validate()
    ctx = distributed.setup(config.device)
    try:
        return Trainer(config, ctx, reporter, list(extra_hooks)).run()
    finally:
        distributed.teardown(ctx)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: full float32). ``auto`` is fp16 AMP on a GPU, float32 on a CPU."""
    if precision == "fp32":
        return None
    if precision == "amp_bf16":
        return torch.bfloat16
    if device.type != "cuda":
        if precision == "amp":
            log.warning("--precision amp needs a GPU; training in float32 on the CPU")
        return None
    return torch.float16


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


class _Window:
    """Sums over the steps since the last log line (this process's share)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.contrastive = 0.0
        self.caption = 0.0
        self.truncated = 0
        self.started = time.perf_counter()


class Trainer:
    def __init__(self, config: TrainConfig, ctx: distributed.DistContext, reporter: Reporter,
                 extra_hooks: list[EvalHook]):
        self.config = config
        self.ctx = ctx
        self.reporter = reporter
        self.extra_hooks = extra_hooks
        self.is_coca = config.task == "coca"

    # --- messages: only the main process speaks ---------------------------------------------------
    def say(self, message: str, level: str = "info") -> None:
        if self.ctx.is_main:
            self.reporter.log(message, level)

    # --- set-up -----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, ctx = self.config, self.ctx
        table = open_caption_data(cfg.data, cfg.csv_image_key, cfg.csv_caption_key)
        hooks = self.build_hooks() + self.extra_hooks
        plan = BatchPlan(len(table), cfg.batch_size, ctx.world_size, ctx.rank, cfg.grad_accum, cfg.seed)
        if plan.steps_per_epoch == 0:
            raise UserError(
                f"{len(table)} samples are fewer than one global batch of {plan.global_batch} (batch size "
                f"{cfg.batch_size} x {ctx.world_size} processes x {cfg.grad_accum} accumulation steps); "
                "lower --batch-size or --grad-accum",
                path=cfg.data,
            )
        total_steps = plan.steps_per_epoch * cfg.epochs
        start = rundir.inspect(cfg)
        if start.finished:
            summary = start.summary or {}
            self.say(f"{cfg.run_dir}: this run has already finished ({summary.get('steps', '?')} steps); "
                     f"its model is {cfg.run_dir / 'model.safetensors'}")
            return TrainResult(cfg.run_dir, int(summary.get("steps", total_steps)), total_steps, True,
                               cfg.run_dir / "model.safetensors", summary.get("metrics", {}))
        distributed.barrier(ctx)  # every process has looked at the run directory before it changes

        bundle = model_setup.build(cfg)
        model = bundle.model
        self.prepare_for_training(model)
        model.to(ctx.device)
        optimizer = make_optimizer(model, cfg)
        autocast_dtype = resolve_precision(cfg.precision, ctx.device)
        scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None

        step, epoch, step_in_epoch = 0, 0, 0
        if ctx.is_main and start.existing:
            rundir.remove_stale_temporaries(cfg.run_dir)
        newest = None
        if start.state is not None:
            newest = checkpoint.load_newest_state(cfg.run_dir, warn=lambda m: self.say(m, "warning"))
        if newest is not None:
            step, epoch, step_in_epoch = self.restore(newest[1], model, optimizer, scaler, len(table))
            self.say(f"continuing the run in {cfg.run_dir} from step {step} of {total_steps} "
                     f"(epoch {epoch + 1}, step {step_in_epoch} of {plan.steps_per_epoch})")
        elif ctx.is_main:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            rundir.write_run_json(cfg, ctx.world_size)
            checkpoint.write_model_configs(cfg.run_dir, bundle.model_cfg, bundle.preprocess_cfg)
        if ctx.is_main and start.state is None:
            self.describe_start(model, table, plan, total_steps)

        self.model = model
        self.bundle = bundle
        self.optimizer = optimizer
        self.scaler = scaler
        self.hooks = hooks
        self.total_steps = total_steps
        self.plan = plan
        self.autocast = self.autocast_factory(autocast_dtype)
        self.losses = Losses(ctx,
                             contrastive_weight=cfg.contrastive_loss_weight if self.is_coca else 1.0,
                             caption_weight=cfg.caption_loss_weight if self.is_coca else 0.0)
        self.ddp_model = self.wrap(model)
        self.metrics_log = MetricsLog(cfg.run_dir, enabled=ctx.is_main, tensorboard=cfg.tensorboard,
                                      resume_step=step)
        try:
            return self.loop(table, step, epoch, step_in_epoch)
        finally:
            self.metrics_log.close()

    def build_hooks(self) -> list[EvalHook]:
        cfg = self.config
        hooks: list[EvalHook] = []
        if cfg.val_data:
            hooks.append(RetrievalHook(open_caption_data(cfg.val_data, cfg.csv_image_key, cfg.csv_caption_key)))
        if cfg.val_zeroshot:
            hooks.append(ZeroShotHook(Path(cfg.val_zeroshot), cfg.zeroshot_templates))
        if cfg.val_selo:
            hooks.append(SeloHook(Path(cfg.val_selo), cfg.run_dir / "selo"))
        return hooks

    def prepare_for_training(self, model: nn.Module) -> None:
        """Locking, LoRA and gradient checkpointing, in that order."""
        cfg = self.config
        if cfg.lock_image:
            model.lock_image_tower(unlocked_groups=cfg.lock_image_unlocked_groups)
        if cfg.lora_rank:
            towers = [t for t in cfg.lora_towers if not (cfg.lock_image and t == "image")]
            count = apply_lora(model, cfg.lora_rank, cfg.effective_lora_alpha, towers)
            if count == 0:
                raise UserError(f"--lora: {cfg.model_name} has no attention projections in the towers "
                                f"{', '.join(towers)}")
        if cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if not any(p.requires_grad for p in model.parameters()):
            raise UserError("nothing left to train: every parameter is frozen")

    def restore(self, state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None, n_samples: int) -> tuple[int, int, int]:
        if state["world_size"] != self.ctx.world_size:
            raise UserError(
                f"the run's checkpoints were made with {state['world_size']} processes; continue it with "
                f"{state['world_size']} (e.g. --nproc {state['world_size']}) so the global batch stays the same",
                path=self.config.run_dir,
            )
        if state["n_samples"] != n_samples:
            self.say(f"the training data now has {n_samples} samples, the run started with "
                     f"{state['n_samples']}; continuing with the new data", "warning")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        return int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"])

    def describe_start(self, model: nn.Module, table: CaptionTable, plan: BatchPlan, total_steps: int) -> None:
        cfg = self.config
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self.say(
            f"training {cfg.task} {cfg.model_name} (init {cfg.init}) on {len(table)} samples: "
            f"{_plural(cfg.epochs, 'epoch')} x {plan.steps_per_epoch} steps, global batch {plan.global_batch} "
            f"({_plural(self.ctx.world_size, 'process')} on {self.ctx.device.type}); "
            f"{trainable:,} of {total:,} parameters trainable"
        )

    def autocast_factory(self, dtype: torch.dtype | None) -> Callable[[], contextlib.AbstractContextManager]:
        device_type = self.ctx.device.type
        if dtype is None:
            return contextlib.nullcontext
        return lambda: torch.autocast(device_type=device_type, dtype=dtype)

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.ctx.distributed:
            return model
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        # a CoCa loss weight of zero leaves the projections of that loss without gradient
        unused = self.is_coca and not (self.losses.uses_captions and self.losses.uses_contrastive)
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)

    # --- the loop ---------------------------------------------------------------------------------
    def loop(self, table: CaptionTable, step: int, epoch: int, step_in_epoch: int) -> TrainResult:
        cfg, ctx, plan = self.config, self.ctx, self.plan
        dataset = ImageTextDataset(table, self.bundle.train_transform, seed=cfg.seed)
        collate = Collate(self.bundle.tokenizer, self.bundle.context_length)
        window = _Window()
        self.warned_truncation = False
        metrics: dict[str, float] = {}
        self.model.train()
        while epoch < cfg.epochs:
            batches = list(plan.micro_batches(epoch, step_in_epoch))
            loader = make_loader(dataset, batches, collate, cfg.workers, pin_memory=ctx.device.type == "cuda")
            micro_batches = iter(loader)
            epoch_truncated, epoch_samples = 0, 0
            while step_in_epoch < plan.steps_per_epoch:
                micro = [next(micro_batches) for _ in range(cfg.grad_accum)]
                set_learning_rate(self.optimizer, learning_rate(step, cfg, self.total_steps))
                self.optimizer_step(micro, window)
                truncated = sum(int(m["truncated"]) for m in micro)
                window.truncated += truncated
                epoch_truncated += truncated
                epoch_samples += sum(len(m["tokens"]) for m in micro)
                step += 1
                step_in_epoch += 1
                end_of_epoch = step_in_epoch == plan.steps_per_epoch
                if ctx.is_main:
                    self.reporter.progress("train", step, self.total_steps)
                if step % cfg.log_every == 0 or end_of_epoch:
                    self.log_window(window, step, epoch)
                if end_of_epoch:
                    self.report_truncation(epoch, epoch_truncated, epoch_samples)
                    epoch, step_in_epoch = epoch + 1, 0
                stop = cfg.stop_after_steps is not None and step >= cfg.stop_after_steps and epoch < cfg.epochs
                cancel = distributed.any_process(ctx, self.reporter.cancel_requested())
                if end_of_epoch or stop or cancel or (cfg.save_every and step % cfg.save_every == 0):
                    self.save_state(step, epoch, step_in_epoch, len(table))
                if end_of_epoch:
                    self.export_model(self.config.run_dir / f"epoch_{epoch}.safetensors")
                if end_of_epoch or (cfg.eval_every and step % cfg.eval_every == 0):
                    metrics = self.evaluate(step, epoch if end_of_epoch else epoch + 1) or metrics
                if window.steps == 0:
                    window.started = time.perf_counter()  # checkpoint and evaluation time is not training time
                if cancel:
                    self.say(f"stopped at step {step} of {self.total_steps}; the run continues from here "
                             "when started again")
                    raise Cancelled()
                if stop:
                    self.say(f"stopped after step {step} of {self.total_steps} as asked (--stop-after-steps); "
                             "start the same command again to continue")
                    return TrainResult(cfg.run_dir, step, self.total_steps, False, None, metrics)
                if end_of_epoch:
                    break
            del micro_batches, loader
        model_path = self.export_model(cfg.run_dir / "model.safetensors")
        if ctx.is_main:
            rundir.write_summary(cfg.run_dir, {
                "finished": True, "steps": step, "epochs": cfg.epochs, "model": model_path.name,
                "model_config": "model_config.json", "metrics": metrics, "rs_vlm_version": __version__,
            })
            self.say(f"finished {step} steps; model: {model_path}")
        distributed.barrier(ctx)
        return TrainResult(cfg.run_dir, step, self.total_steps, True, model_path, metrics)

    # --- one optimizer step -------------------------------------------------------------------------
    def optimizer_step(self, micro: list[dict[str, Any]], window: _Window) -> None:
        ctx, losses = self.ctx, self.losses
        device = ctx.device
        images = [m["images"].to(device, non_blocking=True) for m in micro]
        tokens = [m["tokens"].to(device, non_blocking=True) for m in micro]
        n_caption_tokens = 1
        if losses.uses_captions:
            local = sum(Losses.caption_tokens(t) for t in tokens)
            n_caption_tokens = max(1, distributed.sum_over_processes(ctx, local))

        cached: dict[str, list[torch.Tensor]] = {"image_features": [], "text_features": []}
        if len(micro) > 1 and losses.uses_contrastive:
            # features of every micro-batch, so each backward pass sees the whole batch as negatives
            with torch.no_grad(), self.autocast():
                for im, tok in zip(images, tokens, strict=True):
                    out = self.model(im, tok)
                    for key in cached:
                        cached[key].append(out[key])

        for j, (im, tok) in enumerate(zip(images, tokens, strict=True)):
            last = j == len(micro) - 1
            no_sync = self.ddp_model.no_sync() if ctx.distributed and not last else contextlib.nullcontext()
            with no_sync:
                with self.autocast():
                    out = self.ddp_model(im, tok)
                    total = torch.zeros((), device=device)
                    if losses.uses_contrastive:
                        features = {k: torch.cat(v[:j] + [out[k]] + v[j + 1:]) if v else out[k]
                                    for k, v in cached.items()}
                        contrastive = losses.contrastive(features["image_features"], features["text_features"],
                                                         out["logit_scale"])
                        total = total + losses.contrastive_weight * contrastive
                        if j == 0:
                            window.contrastive += float(contrastive.detach())
                    if losses.uses_captions:
                        token_sum = Losses.caption_token_sum(out["logits"], out["labels"])
                        total = total + losses.caption_weight * token_sum * (ctx.world_size / n_caption_tokens)
                        window.caption += float(token_sum.detach()) / n_caption_tokens
                if self.scaler is not None:
                    self.scaler.scale(total).backward()
                else:
                    total.backward()

        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler is not None:
            if self.config.grad_clip_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.config.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        window.steps += 1

    # --- logging, checkpoints, evaluation ---------------------------------------------------------
    def log_window(self, window: _Window, step: int, epoch: int) -> None:
        ctx = self.ctx
        # contrastive: each process holds its local loss, the global loss is their mean;
        # caption and truncation: each process holds its part of the global sum
        sums = distributed.reduce_sum(ctx, torch.tensor(
            [window.contrastive, window.caption, float(window.truncated)], dtype=torch.float64))
        steps = max(window.steps, 1)
        contrastive = float(sums[0]) / ctx.world_size / steps
        caption = float(sums[1]) / steps
        truncated = int(round(float(sums[2])))
        elapsed = time.perf_counter() - window.started
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        loss = 0.0
        if self.losses.uses_contrastive:
            row["contrastive_loss"] = contrastive
            loss += self.losses.contrastive_weight * contrastive
        if self.losses.uses_captions:
            row["caption_loss"] = caption
            loss += self.losses.caption_weight * caption
        row["loss"] = loss
        row["samples_per_s"] = window.steps * self.plan.global_batch / elapsed if elapsed > 0 else float("nan")
        row["truncated_captions"] = truncated
        self.metrics_log.train(step, row)
        parts = " ".join(f"{k.removesuffix('_loss')} {row[k]:.4f}" for k in ("contrastive_loss", "caption_loss")
                         if k in row)
        self.say(f"step {step}/{self.total_steps} epoch {epoch + 1}: loss {loss:.4f} ({parts}) "
                 f"lr {row['lr']:.3g} {row['samples_per_s']:.1f} samples/s")
        if truncated and not self.warned_truncation:
            self.warned_truncation = True
            self.say(f"captions longer than the model's context ({self.bundle.context_length} tokens) are "
                     f"truncated: {truncated} in the last {window.steps} steps (column truncated_captions "
                     f"of train_log.csv)", "warning")
        window.reset()

    def report_truncation(self, epoch: int, truncated: int, samples: int) -> None:
        truncated = distributed.sum_over_processes(self.ctx, truncated)
        samples = distributed.sum_over_processes(self.ctx, samples)
        if truncated:
            self.say(f"epoch {epoch + 1}: {truncated} of {samples} captions were longer than "
                     f"{self.bundle.context_length} tokens and were truncated", "warning")

    def save_state(self, step: int, epoch: int, step_in_epoch: int, n_samples: int) -> None:
        if not self.ctx.is_main:
            return
        cfg = self.config
        checkpoint.save_state(rundir.state_path(cfg.run_dir, step), {
            "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "world_size": self.ctx.world_size, "n_samples": n_samples,
            "model": checkpoint.to_cpu(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "scheduler": {"kind": cfg.schedule, "step": step, "total_steps": self.total_steps},
            "rng": checkpoint.rng_state(),
            "rs_vlm_version": __version__,
        })
        checkpoint.prune_states(cfg.run_dir, cfg.keep_checkpoints)

    def export_model(self, path: Path) -> Path:
        if self.ctx.is_main:
            state = merged_state_dict(self.model) if has_lora(self.model) else self.model.state_dict()
            checkpoint.save_model(path, state, metadata={
                "format": "pt", "model": self.config.model_name, "task": self.config.task,
                "rs_vlm_version": __version__,
            })
        return path

    def evaluate(self, step: int, epoch: int) -> dict[str, float]:
        """Run the evaluation hooks in the main process; the others wait."""
        metrics: dict[str, float] = {}
        if self.ctx.is_main and self.hooks:
            self.model.eval()
            ectx = EvalContext(
                model=self.model, tokenizer=self.bundle.tokenizer, context_length=self.bundle.context_length,
                transform=self.bundle.eval_transform, device=self.ctx.device, autocast=self.autocast,
                batch_size=self.config.batch_size, step=step, epoch=epoch, is_coca=self.is_coca,
                reporter=self.reporter,
            )
            try:
                for hook in self.hooks:
                    metrics.update(hook(ectx))
            finally:
                self.model.train()
            metrics = finite(metrics)
            self.metrics_log.evaluation(step, epoch, metrics)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                              if k.endswith(("mean_recall", "R@1", "top1", "_loss")))
            self.say(f"evaluation after step {step} (epoch {epoch}): {shown}")
        distributed.barrier(self.ctx)
        return metrics
