"""Data stage: cleaning, tokenizer, shards, loader, embedded default corpus."""
