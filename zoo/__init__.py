"""zoo: real LoRA finetunes with measured labels, the training data of loravet's predictors.

A zoo is a directory of PEFT adapters (``<id>/adapter_model.safetensors`` at float16 and
``<id>/adapter_config.json``), one ``<id>/finetune.json`` per LoRA (hyperparameters, seed,
labels measured on held-out data), and three files regenerated from those: ``manifest.jsonl``,
``splits.json`` and ``zoo.json``. Recipes: ``digits`` (fast) and ``minilm-topics`` (flagship).

    loravet zoo build --recipe digits --count 100 --out zoos/digits --jobs 2
    loravet zoo verify zoos/digits --sample 5
"""
