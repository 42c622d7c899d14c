"""trl 0.11.4's `PPOTrainer.step`, the reference our PPO (ppo_sentiment_example.py) was recorded against
(bench/record_trl_ppo.py) and is timed against (bench/bench_ppo.py). Importable only inside trl 0.11.4's venv
(bench/trl_venv.py); nothing in the training path uses it.

    make_trl_trainer   trl's `PPOTrainer` on a causal LM and its reference, each in trl's value-head class
    trl_step           `trainer.step` on (queries, responses, float scores)
"""
import warnings

import torch

with warnings.catch_warnings():  # trl 0.11.4 announces at import that this API will go: it is the reference here
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"trl(\.|$)")
    import trl


def make_trl_trainer(lm, ref_lm, tokenizer, value_head=None, fused_adam=True, **ppo_config_kwargs):
    """A `PPOTrainer` configured by `PPOConfig(**ppo_config_kwargs)` (no dataset: batches are fed by hand; its batch
    size must be the size of every batch given to `trl_step`). The policy's value head is `value_head` (a
    `torch.nn.Linear`, shared, not copied) when given, else trl's fresh one; dropout off in it, as in ours. The
    optimiser is Adam with trl's settings, as one fused kernel like ours (`fused_adam`), else trl's own."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(PPOTrainer|PPOConfig|deprecated)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r"No dataset is provided")
        policy, ref_model = (trl.AutoModelForCausalLMWithValueHead(model, summary_dropout_prob=0.0)
                             for model in (lm, ref_lm))
        policy.is_peft_model = ref_model.is_peft_model = False  # trl sets it only in its own from_pretrained
        if value_head is not None:
            policy.v_head.summary = value_head
        config = trl.PPOConfig(**ppo_config_kwargs)
        optimizer = None
        if fused_adam:
            optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad],
                                         lr=config.learning_rate, fused=True)
        return trl.PPOTrainer(config=config, model=policy, ref_model=ref_model, tokenizer=tokenizer,
                              optimizer=optimizer)


def trl_step(trainer, queries, responses, scores):
    """trl's statistics dict of one `step`."""
    return trainer.step(list(queries), list(responses), [torch.tensor(float(s)) for s in scores])
