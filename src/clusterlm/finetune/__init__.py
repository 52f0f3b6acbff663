"""Fine-tuning a pretrained checkpoint for the applications: classification, SFT, translation, QA.

    records (JSONL) ──▶ examples (token ids + loss mask) ──▶ training loop ──▶ run dir
                                                                             │
                          baselines (TF-IDF, identity) ──▶ metrics ◀── evaluate

Modules: `jsonl` (reading records), `store` (the one place checkpoints are read and
written), `runfiles` (atomic run dirs), `body` (hidden states, padding, pooling),
`classifier` + `classify_data` + `classify_train`, `lora`, `sft_data` (loss mask, packing) +
`sft_train`, `loop` (optimizer, schedule, log), `decode`, `metrics`, `baselines`, `evaluate`,
the offline dataset builders `data_classify`, `data_translate`, `data_qa` (split by group with
`splits`) and `extras` (the optional dependencies); the verbs call them from `clusterlm.api.finetune`.
"""
