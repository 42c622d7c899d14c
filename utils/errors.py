"""Errors for users: a bad input is one line `error: ...` and exit code 2, never a traceback (`run_main`)."""
import sys


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""


def run_main(main):
    """Run `main()`; a UserError becomes `error: ...` on stderr and exit code 2, a KeyboardInterrupt (a second
    Ctrl-C) one line and exit code 130."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C (the first one asks the loop to save and stop: utils.run)
        print("\nstopped at once: the last complete checkpoint stays as it was", file=sys.stderr)
        sys.exit(130)
    finally:
        leave_process_group()


def leave_process_group():
    """End torch.distributed's process group (under `accelerate launch`) before the interpreter exits: left to the
    exit, a process of a finished two-process run was once aborted ("terminate called without an active
    exception")."""
    torch = sys.modules.get("torch")  # not imported: no process group
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
