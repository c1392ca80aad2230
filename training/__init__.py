"""Training and evaluation of LoRA predictors (GL-net and baselines) on zoos."""
