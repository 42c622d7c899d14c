"""trl 0.11.4's `PPOTrainer.step`, the reference our PPO (ppo_sentiment_example.py) is checked and timed against
(tests/test_ppo.py, bench/bench_ppo.py). Nothing in the training path uses it.

    make_trl_trainer   trl's `PPOTrainer` on our policy and reference, with the same fused Adam as ours
    trl_step           `trainer.step` on (queries, responses, float scores)
"""
import warnings

import torch

from utils.policy import import_trl


def make_trl_trainer(policy, ref_model, tokenizer, **ppo_config_kwargs):
    """A `PPOTrainer` configured by `PPOConfig(**ppo_config_kwargs)` (no dataset: batches are fed by hand);
    its batch size must be the size of every batch given to `trl_step`."""
    trl = import_trl()
    with warnings.catch_warnings():  # trl 0.11.4 announces its step API's removal; it is the reference here
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(PPOTrainer|PPOConfig|deprecated)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r"No dataset is provided")
        config = trl.PPOConfig(**ppo_config_kwargs)
        optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=config.learning_rate,
                                     fused=True)
        return trl.PPOTrainer(config=config, model=policy, ref_model=ref_model, tokenizer=tokenizer,
                              optimizer=optimizer)


def trl_step(trainer, queries, responses, scores):
    """trl's statistics dict of one `step`."""
    return trainer.step(list(queries), list(responses), [torch.tensor(float(s)) for s in scores])
