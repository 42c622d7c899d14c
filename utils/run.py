"""What every training script does around its algorithm, in one place:

- the processes and the models on them (`make_accelerator`, `prepare_trainable`, `prepare_frozen`,
  `for_generation`, `optimizer_step`): accelerate's Accelerator for one process or data parallelism, and with
  `--fsdp` the same Accelerator for the processes torchrun started while the trained model (and a full reference)
  is sharded with PyTorch FSDP2 (utils/sharding.py); Adam as one fused kernel; gradient clipping where asked.
- the run around the steps (`Run`): its header, its log, the loop over epochs or steps that saves now and then,
  stops early when asked, and saves and exits 130 on Ctrl-C; checkpoints named alike for every algorithm.

- stopping without losing work (`StopRequests`): the first Ctrl-C or SIGTERM asks the loop to stop; it finishes
  the current step, saves a checkpoint with the reason "interrupted" and exits with 130. A second Ctrl-C stops at
  once (KeyboardInterrupt); checkpoints are written atomically, so the last complete one stays loadable.
  Python cannot raise where a signal may land inside a finalizer (a `__del__`, a weakref callback): it prints the
  KeyboardInterrupt there and goes on, so such a one is delivered again, to land in the code that runs next.
  The stop is deferred rather than raised where the signal lands: an exception raised inside `generate` can
  leave torch's vmap state broken, so that the KeyboardInterrupt turns into a RuntimeError and nothing is saved.
- never training on, or saving, a broken model (`stop_if_not_finite`, `check_finite_weights`): a NaN or infinite
  loss stops the run with one line naming the step and the option to lower, before anything is saved over the
  last good checkpoint.
"""
import contextlib
import os
import signal
import sys
import threading
import time

import torch
from accelerate import Accelerator
from tqdm import tqdm

from utils.device import accelerator_kwargs, any_process, check_precision
from utils.errors import UserError

INTERRUPTED_EXIT = 130  # what a shell reports for a program stopped by Ctrl-C


class StopRequested(Exception):
    """Raised inside `StopRequests.interruptible()` blocks, where stopping at once loses nothing."""


class Diverged(UserError):
    """The loss or the weights became NaN or infinite: training stops, the last good checkpoint stays."""


class StopRequests:
    """Ctrl-C and SIGTERM (and SIGHUP with `hangup=True`: the terminal closed) as requests to stop after the current
    step; `requested` names the first one. Use as a context manager: the previous handlers come back on exit.

        with StopRequests() as stop:
            for step in ...:
                train_one_step()
                if stop.requested:
                    save("interrupted")
                    sys.exit(INTERRUPTED_EXIT)
    """

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "the terminal closed (SIGHUP)"}

    def __init__(self, message="stop requested: saving after this step (Ctrl-C again to stop at once) ...",
                 hangup=False, write=None):
        self.requested = None
        self.message = message
        self.write = write or (lambda text: print(text, file=sys.stderr, flush=True))
        self.signals = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hangup else ())
        self._interruptible = False
        self._previous = {}
        self._previous_unraisablehook = None

    def install(self):
        """Take over the signals (for the rest of the process, unless used as a context manager)."""
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = {signum: signal.signal(signum, self._on_signal) for signum in self.signals}
            self._previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, self._on_unraisable
        return self

    def __enter__(self):
        return self.install()

    def uninstall(self):
        """Give the signals back to the handlers they had before `install()`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if self._previous_unraisablehook:
            sys.unraisablehook, self._previous_unraisablehook = self._previous_unraisablehook, None

    def __exit__(self, *exc):
        self.uninstall()

    def _on_signal(self, signum, frame):
        name = self.NAMES[signum]
        if signum == signal.SIGHUP:  # nobody reads the output any more, and writing to a closed terminal fails
            _silence_output()
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: at once
        if self._interruptible:
            self.requested = self.requested or name
            raise StopRequested(name)
        if self.requested is None:
            self.requested = name
            self.write(f"\n{name}: {self.message}")

    def _on_unraisable(self, unraisable):
        if unraisable.exc_type is KeyboardInterrupt and self.requested:  # the second Ctrl-C, raised in a finalizer
            # again a moment later, from another thread: raised here, it would only be printed once more
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
        else:
            self._previous_unraisablehook(unraisable)

    @contextlib.contextmanager
    def interruptible(self):
        """A block where nothing is lost by stopping at once (waiting for a person, loading models): a request
        raises StopRequested right there instead of waiting for the step to end."""
        if self.requested:
            raise StopRequested(self.requested)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False


def _silence_output():
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.dup2(devnull, sys.stderr.fileno())


# ---------------------------------------------------------------- broken numbers
def stop_if_not_finite(loss, where, hint, accelerator=None):
    """Diverged (one line: `where`, say "step 12", and the option to change) when the loss is NaN or infinite on
    any process."""
    bad = not bool(torch.isfinite(torch.as_tensor(loss)).all())
    if bad if accelerator is None else any_process(accelerator, bad):
        raise Diverged(f"{where}: the loss is NaN or infinite, so training stopped; the checkpoints saved "
                       f"before stay as they were. Check {hint} (a smaller learning rate is the usual cure)")


def check_finite_weights(named_weights, what, hint="--learning_rate"):
    """Diverged unless every one of the (name, tensor) `named_weights` is finite: a broken model is never saved."""
    named_weights = list(named_weights)
    broken = [name for name, p in named_weights if not bool(torch.isfinite(p).all())]
    if broken:
        total = len(named_weights)
        raise Diverged(f"not saving {what}: {len(broken)} of its {total} weight tensors hold NaN or infinite "
                       f"values (first: {broken[0]}); the checkpoints saved before stay as they were. "
                       f"Check {hint} (a smaller learning rate is the usual cure)")


def no_step_trained(steps_done, steps_skipped, what="step"):
    """Diverged when every step of a run was skipped (NaN or infinite losses or rewards): nothing was learnt."""
    if steps_skipped and steps_done == 0:
        raise Diverged(f"all {steps_skipped} {what}s were skipped (NaN or infinite losses or rewards): nothing was "
                       "trained and nothing saved")


# ---------------------------------------------------------------- processes and models
def add_fsdp_argument(parser):
    parser.add_argument("--fsdp", action="store_true",
                        help="shard the trained model over the processes torchrun starts (PyTorch FSDP2: each of "
                             "N processes holds 1/N of the weights, gradients and Adam state; docs/scaling.md)")


class ShardingAccelerator(Accelerator):
    """accelerate's Accelerator for the processes torchrun started (gloo on CPUs, NCCL on GPUs), which the training
    scripts use as they use it for data parallelism (batches split over the processes, reductions, printing once),
    except for the trained model: `prepare_trainable` shards it with FSDP2 instead of replicating it, and the
    mixed precision is FSDP2's (bf16 copies of the float32 shards for the compute), not autocast."""

    def __init__(self, device, mixed_precision=None):
        from utils.sharding import start_processes

        start_processes(device)  # before accelerate looks for a process group: it joins this one
        super().__init__(**accelerator_kwargs(device, "no"))
        self.sharded_precision = mixed_precision


def make_accelerator(device, mixed_precision=None, fsdp=False):
    """The processes a run trains on: one, several under `accelerate launch` or torchrun (data parallel), or with
    `fsdp` torchrun's processes with the trained model sharded over them (`ShardingAccelerator`)."""
    check_precision(mixed_precision, fsdp)
    if fsdp:
        return ShardingAccelerator(device, mixed_precision)
    return Accelerator(**accelerator_kwargs(device, mixed_precision))


def accelerator_for(args):
    """The processes a script's `--device`, `--mixed_precision` and `--fsdp` ask for (`make_accelerator`)."""
    from utils.device import pick_device

    device = pick_device(args.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # accelerate takes the current device
    return make_accelerator(device, args.mixed_precision, args.fsdp)


def sharded(accelerator):
    return isinstance(accelerator, ShardingAccelerator)


def fused_adam(model, learning_rate, weight_decay=None, no_decay=()):
    """Adam (AdamW with `weight_decay`, none on the weights whose names hold one of `no_decay`) over `model`'s
    trainable weights, as one fused kernel (not one per weight)."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if weight_decay is None:
        return torch.optim.Adam([p for _, p in params], lr=learning_rate, fused=True)
    groups = [{"params": [p for name, p in params if not any(n in name for n in no_decay)],
               "weight_decay": weight_decay},
              {"params": [p for name, p in params if any(n in name for n in no_decay)], "weight_decay": 0.0}]
    return torch.optim.AdamW([group for group in groups if group["params"]], lr=learning_rate, fused=True)


def prepare_trainable(accelerator, model, **optimizer_options):
    """(model, optimizer) ready to train on the accelerator's processes: replicated and wrapped for data parallelism
    by accelerate, or sharded with FSDP2 (the optimizer is then built on the shards, so its state is sharded too).
    The optimizer is `fused_adam(model, **optimizer_options)`."""
    if sharded(accelerator):
        from utils.sharding import shard_model

        model = shard_model(model.to(accelerator.device), accelerator.sharded_precision)
        return model, fused_adam(model, **optimizer_options)
    return accelerator.prepare(model, fused_adam(model, **optimizer_options))


def prepare_frozen(accelerator, model, trained=None):
    """A model that is only run, on the accelerator's device. Under FSDP2 the reference of the `trained` model is
    sharded as it is (it is as large: utils.sharding.shard_reference); the reward models and classifiers, small
    next to a policy, are replicated like everything under data parallelism."""
    if sharded(accelerator) and trained is not None:
        from utils.sharding import shard_reference

        return shard_reference(model.to(accelerator.device), trained, accelerator.sharded_precision)
    return model.to(accelerator.device)


@contextlib.contextmanager
def for_generation(accelerator, model):
    """`model` as `generate` wants it: without its data-parallel wrapper, or, sharded, gathered whole once for the
    rollout (utils.sharding.gathered_weights: a sharded model would gather every block at every decoding step)."""
    if sharded(accelerator):
        from utils.sharding import gathered_weights

        with gathered_weights(model) as whole:
            yield whole
    else:
        yield accelerator.unwrap_model(model)


def optimizer_step(accelerator, optimizer, loss, max_grad_norm=None):
    """One gradient step on `loss`, the gradient's norm clipped to `max_grad_norm` when given (the whole model's
    norm, also when it is sharded)."""
    optimizer.zero_grad()
    accelerator.backward(loss)
    if max_grad_norm:
        accelerator.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_grad_norm)
    optimizer.step()


def written_by_main(accelerator, model, write):
    """`write(model, weights)` on the main process, `model` without its data-parallel wrapper and `weights` None
    (its own) or, sharded, its whole state dict gathered from the shards (a collective: every process calls this)."""
    weights = None
    if sharded(accelerator):
        from utils.sharding import full_state_dict

        weights = full_state_dict(model)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write(accelerator.unwrap_model(model), weights)
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------- the run
def checkpoint_name(save_dir, number, score=None):
    """model_<epoch or step>[_<score>]: every algorithm's checkpoint folders, sortable by the number."""
    return os.path.join(save_dir, f"model_{number}" + ("" if score is None else f"_{score:.2f}"))


class Run:
    """The house every trainer lives in, whatever its algorithm:

        run = Run(accelerator, args, unit="epoch", start=start_epoch, total=total_epochs, save_every=args.save_freq)
        run.header(f"PPO on ...")
        with run:
            for epoch in run.loop(save, desc="PPO epochs"):
                ...                             # one epoch of the algorithm
                run.check(loss, "--learning_rate")     # a NaN loss stops the run
                run.trained()                          # or run.skipped()
                run.log(record)
                if reached: run.end_early("reward_reached", "...")

    `loop` yields the epoch (or step) numbers from `start`; after each it saves (`save(reason)`, called on every
    process) every `save_every`, and after the last with the reason "end" or the one `end_early` gave. The first Ctrl-C
    or SIGTERM saves after the current one with the reason "interrupted" and exits with 130 (StopRequests). A run
    that trained nothing (every step skipped) saves nothing. The JSONL log (and its tracker) is the main
    process's."""

    def __init__(self, accelerator, args, unit, start, total, save_every=None, resume=False, redo_from=None):
        from utils.logger import TrainLogger

        self.accelerator, self.args, self.unit = accelerator, args, unit
        self.start = self.completed = self.last_saved = start
        self.total, self.save_every = total, save_every
        self.steps_trained = self.steps_skipped = 0
        self.end = None
        self.is_main_process = accelerator.is_main_process
        self.logger = None
        if self.is_main_process:
            self.logger = TrainLogger(args.log_dir, args.log_name, x_key=unit, resume=resume,
                                      redo_from=start if redo_from is None else redo_from, report_to=args.report_to)
        self.stop = StopRequests(f"saving after this {unit} (Ctrl-C again to stop at once) ...", write=tqdm.write)
        self.since = time.time()  # `steps_per_second` counts from here
        self.plot = self.logger.plot if self.logger else (lambda *a, **k: None)

    def print(self, *lines):
        for line in lines:
            self.accelerator.print(line)

    def header(self, line):
        """The run's first line (what runs where), then the settings that differ from the plain defaults."""
        from utils.presets import settings_line

        self.print(line, settings_line(self.args))

    def __enter__(self):
        self.stop.install()
        return self

    def __exit__(self, *exc):
        self.stop.uninstall()
        if self.logger:
            self.logger.close()

    def loop(self, save, desc=None):
        """The epoch (or step) numbers, with a progress bar named `desc` (none without)."""
        for number in tqdm(range(self.start, self.total), initial=self.start, total=self.total, desc=desc,
                           disable=not self.is_main_process or desc is None):
            yield number
            self.completed = number + 1
            if any_process(self.accelerator, bool(self.stop.requested)):  # every process stops after the same one
                if self.completed > self.last_saved:
                    self.save(save, "interrupted")
                self.plot()
                sys.exit(INTERRUPTED_EXIT)
            if self.end:
                break
            if self.save_every and self.completed % self.save_every == 0 and self.completed < self.total:
                self.save(save, "periodic")
                self.plot()  # drawing takes longer than a tiny epoch: only when saving
        if self.last_saved != self.completed:
            self.save(save, self.end or "end")
        self.plot()
        if self.logger:
            units = self.unit if self.completed == 1 else f"{self.unit}s"
            print(f"done: {self.completed} {units}, logs in {self.logger.jsonl_path} and {self.logger.png_path}")

    def save(self, save, reason):
        no_step_trained(self.steps_trained, self.steps_skipped, self.unit)  # nothing learnt: nothing to save
        save(reason)
        self.last_saved = self.completed
        self.since = time.time()

    def steps_per_second(self, steps):
        """The speed of the last `steps` steps, the time spent saving (and evaluating) left out."""
        now = time.time()
        speed, self.since = steps / (now - self.since), now
        return speed

    def check(self, loss, hint="--learning_rate"):
        """Diverged (the run stops, nothing is saved) when `loss` is NaN or infinite on any process."""
        stop_if_not_finite(loss, f"{self.unit} {self.completed + 1}", hint, self.accelerator)

    def trained(self):
        self.steps_trained += 1

    def skipped(self):
        self.steps_skipped += 1

    def end_early(self, reason, message):
        """Stop after this epoch (or step), saving with `reason`."""
        self.print(message)
        self.end = reason

    def log(self, record):
        if self.logger:
            self.logger.log(record)


def save_checkpoint(accelerator, policy, tokenizer, path, state):
    """Save the trained `policy` (prepared by `prepare_trainable`) as a checkpoint folder: called on every process,
    written by the main one (`written_by_main`)."""
    from utils.checkpoints import save_policy_checkpoint

    def write(model, weights):
        save_policy_checkpoint(model, tokenizer, path, state, weights)
        tqdm.write(f"saved {path}")

    written_by_main(accelerator, policy, write)
