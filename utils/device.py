"""Device, precision, processes and seeds: what every training script asks for alike.

    pick_device / allow_tf32          --device (CUDA when present), TF32 on CUDA
    accelerator_kwargs / any_process  accelerate's Accelerator settings; a flag agreed by every process
    check_precision                   --mixed_precision against --fsdp
    set_seed                          Python's, numpy's and torch's generators
"""
import random

from utils.errors import UserError

# torch and numpy are imported in the functions that use them: the command-line tools that only read files start
# in a fraction of a second without them


MIXED_PRECISION = ("no", "bf16", "fp16")


def pick_device(name=None):
    """`--device` if given, else CUDA when present, else CPU. On CUDA, TF32 matmuls are allowed (`allow_tf32`)."""
    import torch

    device = torch.device(name) if name else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        allow_tf32()
    return device


def allow_tf32():
    """Let CUDA run float32 matmuls and convolutions in TF32 (Ampere GPUs and newer; ignored by older ones).
    On one H100 it took the reward model's step from 6.3 to 14.6 step/s; the CPU is left as it is. The
    legacy flags, as accelerate and transformers set them: mixing them with torch's newer `fp32_precision`
    API makes later reads of either raise."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def add_mixed_precision_argument(parser):
    parser.add_argument("--mixed_precision", choices=MIXED_PRECISION,
                        help="autocast through accelerate: bf16 (GPUs since Ampere, also the CPU) or fp16 (GPU "
                             "only); default: what `accelerate launch` or `accelerate config` chose, else no")


def check_precision(mixed_precision, fsdp=False):
    """UserError for --mixed_precision fp16 with --fsdp: FSDP2's policy here is bf16 copies of float32 weights, or
    float32, and fp16 would need a gradient scaler that sharded training here does not have."""
    if fsdp and mixed_precision == "fp16":
        raise UserError("--fsdp computes in bf16 or float32: use --mixed_precision bf16 (or no); fp16 needs a "
                        "gradient scaler that sharded training here does not have")


def accelerator_kwargs(device, mixed_precision=None):
    """Keyword arguments for `Accelerator(...)` (and trl's `PPOConfig(accelerator_kwargs=...)`): the device
    `pick_device` chose and `--mixed_precision` (None leaves it to `accelerate launch`'s configuration)."""
    import torch

    on_cpu = torch.device(device).type == "cpu"
    if mixed_precision == "fp16" and on_cpu:  # accelerate would silently train in float32 instead
        raise UserError("--mixed_precision fp16 needs a GPU; on the CPU use bf16 or no")
    return {"cpu": on_cpu, "mixed_precision": mixed_precision}


def any_process(accelerator, flag):
    """True on every process when `flag` is true on any (processes must take the same branch)."""
    import torch

    flag = torch.tensor([float(flag)], device=accelerator.device)
    return accelerator.reduce(flag, reduction="sum").item() > 0 if accelerator.num_processes > 1 else flag.item() > 0


def set_seed(seed):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
