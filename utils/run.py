"""What every training script does around its algorithm, in one place:

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

import torch

from utils.device import any_process
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


def check_finite_weights(model, what, hint="--learning_rate"):
    """Diverged unless every parameter of `model` is finite: a broken model is never saved."""
    broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if broken:
        total = sum(1 for _ in model.parameters())
        raise Diverged(f"not saving {what}: {len(broken)} of its {total} weight tensors hold NaN or infinite "
                       f"values (first: {broken[0]}); the checkpoints saved before stay as they were. "
                       f"Check {hint} (a smaller learning rate is the usual cure)")


def no_step_trained(steps_done, steps_skipped, what="step"):
    """Diverged when every step of a run was skipped (NaN or infinite losses or rewards): nothing was learnt."""
    if steps_skipped and steps_done == 0:
        raise Diverged(f"all {steps_skipped} {what}s were skipped (NaN or infinite losses or rewards): nothing was "
                       "trained and nothing saved")
