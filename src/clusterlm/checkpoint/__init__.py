"""Everything on disk about a model or a run: one metadata schema, one load path, one store.

    layout.py        file names, the `meta.json` schema (`CheckpointMeta`), step-dir names
    safety.py        the pickle policy: weights-only `torch.load`, an allow-listed DCP index reader
    state.py         state dicts through `torch.distributed.checkpoint.state_dict` (plain or sharded models)
    formats.py       model-weight formats behind one interface: clusterlm dir, single file, DCP, HF dir
    hf.py            Hugging Face name mapping and `to_transformers`
    load.py          `load_model(path)`: any format → a model, its config, tokenizer and metadata
    backends.py      what goes into one run checkpoint: safetensors + train_state.pt, or DCP shards
    store.py         `CheckpointStore`: the run dir's step dirs, `latest`, rotation, atomic publish
"""
