"""Models: config and presets, Transformer (GPT-2 / Llama styles), recurrent baselines, FLOPs."""
