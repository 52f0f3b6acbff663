"""The application layer: one typed function per verb.

The CLI (`clusterlm/cli/`), the server, the benchmarks and the tests call these; the CLI only
parses arguments and prints what they return. Each module is one verb:

    train.train             join the job (torchrun/Slurm or one process), validate the layout, train
    evaluate.evaluate       score a checkpoint on a dataset's splits
    export.export           a checkpoint → one safetensors file or a Hugging Face dir
    quickstart.quickstart   prepare → train → eval → generate on the default corpus
"""
