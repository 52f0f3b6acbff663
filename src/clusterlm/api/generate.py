"""`clusterlm generate`: the continuation of a prompt by a checkpoint, as a stream of text pieces."""

from __future__ import annotations

from clusterlm.generate.generator import GenerationSettings, TextStream, generate_text
from clusterlm.generate.loading import eos_id, load_for_generation
from clusterlm.generate.sampling import SamplingSettings


def generate(checkpoint: str, prompt: str, *, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             kv_cache: bool = True, device: str = "cpu") -> TextStream:
    """Load `checkpoint` (any path `load_model` reads, with a tokenizer) and start generating; iterate
    the returned stream for text pieces (its token counts are final once it is exhausted)."""
    sampling = SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p)
    loaded = load_for_generation(checkpoint, device)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, sampling=sampling, seed=seed,
                                  use_kv_cache=kv_cache, eos_id=eos_id(loaded.tokenizer))
    return generate_text(loaded.model, loaded.tokenizer, prompt, settings)
