"""The one training loop. A method (engine/methods/, chosen by the recipe) supplies the model, examples,
batches, a loss, metrics and defaults; this does the rest: optimizer and schedule, accumulation,
clipping, precision, evaluation, early stopping, the control object, checkpoints with exact resume,
events, and the final model. Nothing here depends on which method runs."""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from tuneloop.config.recipe import Hyperparameters, Recipe, dump_recipe, load_recipe
from tuneloop.config.settings import Settings
from tuneloop.engine.adapters import apply_adapter, check_qlora, continues, count_parameters
from tuneloop.engine.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from tuneloop.engine.control import Control
from tuneloop.engine.data import epoch_batches, load_recipe_records
from tuneloop.engine.fast_lora import speed_up_lora
from tuneloop.engine.methods import Defaults, EvalContext, Method, Prepared, check_method, method_for
from tuneloop.models.loading import find_run_output, model_kind, run_meta
from tuneloop.models.run_folder import (Checkpoint, Done, EarlyStop, Error, Evaluation, EventLog, Listener, Paused,
                                        Resumed, RunFolder, RunMeta, Start, Step)

class TrainingError(RuntimeError):
    """Training stopped; the message says why. The last good checkpoint is kept."""


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    tokens_per_second: float = 0.0
    seconds: float = 0.0
    stopped_early: bool = False
    paused: bool = False
    """Stopped on request after a checkpoint; `resume` continues it."""


def use_bf16(precision: str, device: str) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def attention_kernels(device: str) -> Any:
    """On a GPU, PyTorch's flash and memory-efficient attention kernels. Its cuDNN kernel, which it may prefer
    on Hopper, builds a new plan for every new sequence length: milliseconds of CPU per layer and step
    when lengths vary from batch to batch, as they do in training."""
    from contextlib import nullcontext

    if device != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def effective_hyperparameters(given: Hyperparameters, defaults: Defaults) -> Hyperparameters:
    """The recipe's hyperparameters with the ones it left empty filled by the method's defaults."""
    filled = {k: v for k, v in defaults.values.items() if getattr(given, k, None) is None}
    return given.model_copy(update=filled)


def _optimizer(groups: list[dict[str, Any]], hp: Hyperparameters) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(groups, lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device or dtype
        return torch.optim.AdamW(groups, lr=hp.learning_rate, weight_decay=hp.weight_decay)


def _scheduler(optimizer: Any, hp: Hyperparameters, total_steps: int) -> Any:
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[hp.scheduler]
    warmup = int(round((hp.warmup_ratio or 0.0) * total_steps))
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


class Loop:
    """One run: set up from a recipe (or a run folder to resume), train, write the final model."""

    def __init__(self, recipe: Recipe, run_dir: Path, settings: Settings, listener: Listener | None = None,
                 control: Control | None = None):
        self.recipe, self.run_dir, self.settings = recipe, Path(run_dir), settings
        self.folder = RunFolder(self.run_dir)
        self.events = EventLog(self.folder.events, listener)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bf16 = use_bf16(recipe.hyperparameters.precision, self.device)
        self.control = control or Control()
        """Read after every optimizer step: stop, pause or save (from a signal handler, a listener, early stopping)."""

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        recipe = self.recipe
        seed_everything(recipe.seed)
        check_method(recipe)
        kind = model_kind(recipe.model, self.settings)
        self.method: Method = method_for(recipe, kind)
        records = load_recipe_records(recipe, self.settings.datasets_dir)
        previous = find_run_output(recipe.model)
        four_bit = recipe.adapter.type == "qlora"
        if four_bit:
            check_qlora()
            if previous is not None:
                raise ValueError("adapter.type 'qlora' trains from a base model in this build; use 'lora' for "
                                 "continuing a previous run")
        # on a GPU in bf16 a frozen base is held in bf16: half the memory and no casts each step; the adapter
        # weights peft adds stay fp32
        frozen = recipe.adapter.type in ("lora", "dora", "ia3") and self.bf16 and self.device == "cuda"
        self.model, self.tokenizer = self.method.load(self.settings, records, four_bit,
                                                      torch.bfloat16 if frozen else None)
        self.data: Prepared = self.method.prepare(self.tokenizer, records)
        # a previous run's adapter of the same type is continued: the result stays an adapter on its base
        self.base_model = recipe.model
        if previous is not None and continues(self.model, recipe.adapter):
            self.base_model = run_meta(previous).base_model
        torch.manual_seed(recipe.seed)  # adapter and new-layer initialisation depend only on the seed
        self.model = apply_adapter(self.model, recipe.adapter, self.method.task_type)
        if not four_bit:  # a 4-bit model is already on its GPU and cannot be moved
            self.model = self.model.to(self.device)
        speed_up_lora(self.model)
        self.model.train()
        self.lengths = [self.method.length(e) for e in self.data.train]
        self.defaults = self.method.defaults(len(self.data.train))
        self.hp = hp = effective_hyperparameters(recipe.hyperparameters, self.defaults)
        self.micro_per_epoch = math.ceil(len(self.data.train) / hp.batch_size)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / hp.gradient_accumulation)
        self.total_steps = hp.max_steps or max(1, math.ceil(hp.epochs * self.steps_per_epoch))
        self.optimizer = _optimizer(self.method.parameter_groups(self.model, hp), hp)
        self.scheduler = _scheduler(self.optimizer, hp, self.total_steps)
        self.state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_pos": 0, "best": None,
                                      "best_checkpoint": None, "bad_evals": 0, "losses": [], "evals": []}
        self.method.start(self.model, self.data, self.run_dir,
                          EvalContext(self.device, hp.batch_size, self._precision, self.tokenizer))

    def chosen_hyperparameters(self) -> dict[str, Any]:
        """The effective hyperparameters, and which of them the method chose (with why)."""
        chosen = {k: why for k, why in self.defaults.reasons.items()
                  if getattr(self.recipe.hyperparameters, k, None) is None and not (k == "epochs" and self.hp.max_steps)}
        return {"hyperparameters": self.hp.model_dump(mode="json"), "method_defaults": chosen}

    def resume(self) -> bool:
        """Continue from the latest checkpoint, if there is one."""
        checkpoints = list_checkpoints(self.run_dir)
        if not checkpoints:
            return False
        self.state = load_checkpoint(checkpoints[-1], self.model, self.optimizer, self.scheduler)
        self.events.write(Resumed(self.state["step"], str(checkpoints[-1])))
        return True

    # ------------------------------------------------------------------ training
    def _micro_batches(self) -> list[list[int]]:
        batches = epoch_batches(self.lengths, self.hp.batch_size, self.recipe.seed, self.state["epoch"], self.hp.order)
        return batches[self.state["batch_pos"]:]

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.method.collate([self.data.train[i] for i in indices], self.tokenizer.pad_token_id)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _optimizer_step(self, group: list[list[int]]) -> tuple[float, int, float]:
        """Forward/backward over the micro-batches of one step; returns (mean loss, tokens, grad norm)."""
        batches = [self.method.rollout(self.model, self._batch(indices)) for indices in group]
        targets = sum(self.method.targets(b) for b in batches)
        tokens = sum(self.method.tokens(b) for b in batches)
        total = 0.0
        for batch in batches:
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16), attention_kernels(self.device):
                loss_sum, _ = self.method.loss(self.model, batch)
            (loss_sum / max(targets, 1)).backward()
            total += float(loss_sum.detach())
        loss = total / max(targets, 1)
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss} at step {self.state['step'] + 1}; lower the learning "
                                "rate or check the data. The last good checkpoint is kept")
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = self.hp.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, tokens, float(norm)

    def train(self) -> RunResult:
        recipe, hp, control = self.recipe, self.hp, self.control
        started = time.perf_counter()
        trainable, total = count_parameters(self.model)
        self.events.write(Start(total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                                train_examples=len(self.data.train), validation_examples=len(self.data.validation),
                                trainable_parameters=trainable, parameters=total, bf16=self.bf16, device=self.device,
                                dropped_examples=self.data.dropped, from_step=self.state["step"],
                                method=self.recipe.method, **self.chosen_hyperparameters()))
        window_tokens, window_start, all_tokens = 0, time.perf_counter(), 0
        if recipe.evaluation.at_start and self.state["step"] == 0 and not self.state["evals"]:
            if metrics := self.eval_metrics():
                self.state["evals"].append({"step": 0, **metrics})
                self.events.write(Evaluation(0, metrics))
        while self.state["step"] < self.total_steps and not control.stop:
            micro = self._micro_batches()
            for start in range(0, len(micro), hp.gradient_accumulation):
                group = micro[start : start + hp.gradient_accumulation]
                loss, tokens, norm = self._optimizer_step(group)
                self.state["step"] += 1
                self.state["batch_pos"] += len(group)
                self.state["losses"].append(loss)
                window_tokens += tokens
                all_tokens += tokens
                step = self.state["step"]
                if step % recipe.logging_steps == 0 or step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    epoch = self.state["epoch"] + self.state["batch_pos"] / self.micro_per_epoch
                    self.events.write(Step(step=step, total_steps=self.total_steps, loss=loss,
                                           lr=self.scheduler.get_last_lr()[0], grad_norm=norm, epoch=round(epoch, 4),
                                           tokens_per_second=window_tokens / max(elapsed, 1e-9),
                                           extra=self.method.step_metrics(self.state["step"])))
                    window_tokens, window_start = 0, time.perf_counter()
                epoch_done = start + hp.gradient_accumulation >= len(micro)
                if epoch_done:
                    self.state["epoch"] += 1
                    self.state["batch_pos"] = 0
                if recipe.evaluation.every_steps and step % recipe.evaluation.every_steps == 0 or (
                        epoch_done and recipe.evaluation.each_epoch):
                    self._evaluate()
                if control.save or recipe.checkpoints.every_steps and step % recipe.checkpoints.every_steps == 0 or (
                        epoch_done and recipe.checkpoints.each_epoch):
                    self._checkpoint()
                    control.save = False
                if control.stop or step >= self.total_steps:
                    break
                if control.pause:
                    return self._pause(started, all_tokens)
        seconds = time.perf_counter() - started
        final = self._write_final()
        stopped_early = control.reason == "early_stop"
        result = RunResult(self.run_dir, final, self.state["step"], list(self.state["losses"]),
                           list(self.state["evals"]), all_tokens / max(seconds, 1e-9), seconds, stopped_early)
        self.events.write(Done(step=self.state["step"], final=str(final), seconds=round(seconds, 2),
                               tokens_per_second=result.tokens_per_second, stopped_early=stopped_early,
                               stopped=control.reason if control.stop else None))
        return result

    def _pause(self, started: float, tokens: int) -> RunResult:
        folder = self._checkpoint()
        seconds = time.perf_counter() - started
        self.events.write(Paused(self.state["step"], str(folder)))
        return RunResult(self.run_dir, self.folder.final, self.state["step"], list(self.state["losses"]),
                         list(self.state["evals"]), tokens / max(seconds, 1e-9), seconds, paused=True)

    # ------------------------------------------------------------------ evaluation
    @contextmanager
    def _precision(self) -> Iterator[None]:
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16), attention_kernels(self.device):
            yield

    def eval_metrics(self) -> dict[str, float]:
        """The method's metrics on the validation data (eval_loss at least); none without validation data."""
        if not self.data.validation:
            return {}
        self.model.eval()
        try:
            return self.method.evaluate(self.model, self.data, EvalContext(self.device, self.hp.batch_size,
                                                                           self._precision, self.tokenizer))
        finally:
            self.model.train()

    def _evaluate(self) -> None:
        """Evaluate, keep the best checkpoint, and ask the control to stop when patience runs out."""
        metrics = self.eval_metrics()
        if not metrics:
            return
        self.state["evals"].append({"step": self.state["step"], **metrics})
        self.events.write(Evaluation(self.state["step"], metrics))
        es = self.recipe.early_stopping
        if not es.enabled:
            return
        if es.metric not in metrics:
            raise TrainingError(f"early_stopping.metric '{es.metric}' is not measured by method "
                                f"'{self.recipe.method}' (it measures {', '.join(metrics)})")
        value, best = metrics[es.metric], self.state["best"]
        lower = es.metric.endswith("loss")
        if best is None or (value < best - es.min_delta if lower else value > best + es.min_delta):
            self.state["best"], self.state["bad_evals"] = value, 0
            self.state["best_checkpoint"] = str(self._checkpoint(best=True))
            return
        self.state["bad_evals"] += 1
        if self.state["bad_evals"] >= es.patience:
            self.events.write(EarlyStop(self.state["step"], es.metric, self.state["best"], self.state["best_checkpoint"]))
            self.control.request_stop("early_stop")

    # ------------------------------------------------------------------ checkpoints and output
    def _checkpoint(self, best: bool = False) -> Path:
        folder = self.folder.checkpoint(self.state["step"])
        if best:
            self.state["best_checkpoint"] = str(folder)
        save_checkpoint(folder, self.model, self.optimizer, self.scheduler, self.state)
        if hasattr(self.model, "peft_config"):  # an adapter is small: keep each checkpoint usable as a model
            self._save_model(folder / "model")
        best_path = Path(self.state["best_checkpoint"]) if self.state["best_checkpoint"] else None
        prune_checkpoints(self.run_dir, self.recipe.checkpoints.keep_last, best_path)
        self.events.write(Checkpoint(self.state["step"], str(folder), best))
        return folder

    def _write_final(self) -> Path:
        best = self.state.get("best_checkpoint")
        if self.recipe.early_stopping.enabled and best and Path(best).exists():
            from safetensors.torch import load_file

            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, tensor in load_file(Path(best) / "trainable.safetensors").items():
                    params[name].copy_(tensor)
        return self._save_model(self.folder.final)

    def _save_model(self, folder: Path) -> Path:
        """The model as a loadable folder: adapter (or weights), tokenizer with its template, run.json."""
        best = self.state.get("best_checkpoint")
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        RunMeta.from_json({
            "base_model": self.base_model, "method": self.recipe.method, "adapter": self.recipe.adapter.type,
            **self.method.run_meta(), "steps": self.state["step"],
            "started_from": self.recipe.model if find_run_output(self.recipe.model) else None,
            "best_checkpoint": best if self.recipe.early_stopping.enabled else None,
            "hyperparameters": self.hp.model_dump(mode="json")}).write(folder)
        return folder


def new_run_dir(settings: Settings) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = settings.runs_dir / f"run-{stamp}-{random.Random().randrange(16**4):04x}"
    run_dir.mkdir(parents=True)
    return run_dir


def train(recipe: Recipe, settings: Settings, run_dir: Path | None = None,
          listener: Listener | None = None, control: Control | None = None) -> RunResult:
    """Train a recipe in a new run folder (or `run_dir`)."""
    check_method(recipe)
    run_dir = Path(run_dir or recipe.output_dir or new_run_dir(settings))
    run_dir.mkdir(parents=True, exist_ok=True)
    RunFolder(run_dir).recipe.write_text(dump_recipe(recipe))
    loop = Loop(recipe, run_dir, settings, listener, control)
    return run_loop(loop)


def resume(run_dir: Path, settings: Settings, listener: Listener | None = None,
           control: Control | None = None) -> RunResult:
    """Continue an interrupted run from its latest checkpoint, exactly where it stopped."""
    run_dir = Path(run_dir)
    if not RunFolder(run_dir).is_run():
        raise TrainingError(f"{run_dir} is not a run folder (no recipe.yaml)")
    loop = Loop(load_recipe(RunFolder(run_dir).recipe), run_dir, settings, listener, control)
    return run_loop(loop, resume=True)


def run_in_this_process(run_dir: Path, settings: Settings, pause_signal: int | None = None) -> RunResult:
    """Train the run folder's recipe, or resume it if it has checkpoints; `pause_signal` (e.g. SIGUSR1)
    makes the loop checkpoint after the current step and stop. What a worker's child process runs."""
    import signal

    run_dir = Path(run_dir)
    loop = Loop(load_recipe(RunFolder(run_dir).recipe), run_dir, settings)
    if pause_signal is not None:
        signal.signal(pause_signal, lambda *_: loop.control.request_pause())
    return run_loop(loop, resume=bool(list_checkpoints(run_dir)))


def run_loop(loop: Loop, resume: bool = False) -> RunResult:
    try:
        loop.setup()
        if resume:
            loop.resume()
        return loop.train()
    except TrainingError as e:
        loop.events.write(Error(str(e)))
        raise
    except torch.OutOfMemoryError as e:
        message = ("out of memory: lower hyperparameters.batch_size or max_length, or raise "
                   f"gradient_accumulation; the last good checkpoint is kept ({e})")
        loop.events.write(Error(message))
        raise TrainingError(message) from e
    except (ValueError, FileNotFoundError) as e:
        loop.events.write(Error(str(e)))
        raise TrainingError(str(e)) from e
