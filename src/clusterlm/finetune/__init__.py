"""Fine-tuning a pretrained checkpoint for the applications: classification, SFT, translation, QA.

    records (JSONL) ──▶ examples (token ids + loss mask) ──▶ training loop ──▶ run dir
                                                                             │
                          baselines (TF-IDF, identity) ──▶ metrics ◀── evaluate

Modules: `jsonl` (reading records), `store` (the one place checkpoints are read and
written), `body` (hidden states and pooling), `classifier`, `lora`, `sft_data` (loss
mask, packing), `loop` (optimizer, schedule, log), `classify_train`, `sft_train`,
`decode`, `metrics`, `baselines`, `evaluate`, the offline dataset builders `data_classify`,
`data_translate`, `data_qa`, and `api` (one function per verb, called by the CLI).
"""
