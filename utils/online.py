"""The loop PPO and GRPO share: sample answers to prompts, score them, update, log, save (the update is the
scripts' own).

    add_rollout_arguments   the options every online-sampling script shares
"""
from utils.checkpoints import checkpoint_folder
from utils.device import add_mixed_precision_argument
from utils.options import (add_device_argument, add_report_to_argument, add_sampling_arguments, file_name, input_file,
                           output_folder, positive_int, seed)


def add_rollout_arguments(parser, save_dir, log_name):
    """The options every online-sampling script (PPO, GRPO) shares: answers, prompts, checkpoints, logs, device."""
    add_sampling_arguments(parser, print_samples=5, printed="each epoch")
    parser.add_argument("--stop_at_sep", action="store_true",
                        help="let the end token ([SEP] for uer's GPT-2; eos or the end of the assistant's turn for "
                             "others) end an answer early")
    parser.add_argument("--prompts_file", type=input_file,
                        help="one prompt per line (default: the original's four prompts)")
    parser.add_argument("--save_freq", type=positive_int, help="save a checkpoint every N epochs")
    parser.add_argument("--save_dir", type=output_folder, default=save_dir)
    parser.add_argument("--resume", type=checkpoint_folder,
                        help="continue from this checkpoint folder (its epoch count and KL settings too)")
    parser.add_argument("--log_dir", type=output_folder, default="logs")
    parser.add_argument("--log_name", type=file_name, default=log_name, help="logs: <log_dir>/<log_name>.jsonl and .png")
    add_report_to_argument(parser)
    parser.add_argument("--reward_batch_size", type=positive_int, default=64)
    parser.add_argument("--seed", type=seed, default=0)
    add_device_argument(parser)
    add_mixed_precision_argument(parser)
