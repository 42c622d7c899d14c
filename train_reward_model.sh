#!/bin/sh
# Train the reward model with the original's configuration: ERNIE 3.0 base, batch 32, max_seq_len 128,
# lr 1e-5, evaluate every 50 steps, log every 10, 10 epochs; the device is chosen automatically.
#   TINY=1 sh train_reward_model.sh        (or: sh train_reward_model.sh --tiny)  offline tiny encoder
# Further arguments go to train_reward_model.py. PYTHON=... picks the interpreter; several GPUs:
#   accelerate launch --multi_gpu --num_processes N train_reward_model.py <the same arguments>
set -e
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
# the rank lists below are built from the installed review corpus by train_reward_model.py when missing
DATA=data/reward_datasets/sentiment_analysis
if [ "$1" = "--tiny" ]; then
    shift
    TINY=1
fi
if [ "${TINY:-0}" = "1" ]; then
    exec "$PYTHON" train_reward_model.py --tiny "$@"
fi
exec "$PYTHON" train_reward_model.py \
    --model_name "nghuyong/ernie-3.0-base-zh" \
    --train_path "$DATA/train.tsv" \
    --dev_path "$DATA/dev.tsv" \
    --save_dir "checkpoints/reward_model/sentiment_analysis" \
    --log_dir "logs/reward_model/sentiment_analysis" \
    --log_name "ERNIE Reward Model" \
    --batch_size 32 \
    --max_seq_len 128 \
    --learning_rate 1e-5 \
    --valid_steps 50 \
    --logging_steps 10 \
    --num_train_epochs 10 \
    "$@"
