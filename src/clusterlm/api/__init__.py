"""The application layer: one typed function per verb.

The CLI (`clusterlm/cli/`), the benchmarks and the tests call these; the CLI only parses
arguments and prints what they return. One module per verb (or family of verbs):

    train.train             join the job (torchrun/Slurm or one process), validate the layout, train
    evaluate.evaluate       score a checkpoint on a dataset's splits
    generate.generate       stream the continuation of a prompt
    serve.serve             load a checkpoint and serve it (OpenAI-style HTTP, batched)
    export.export           a checkpoint → one safetensors file or a Hugging Face dir
    quickstart.quickstart   prepare → train → eval → generate on the default corpus
    finetune.*              classification heads, SFT/LoRA, their evaluations and data builders
    plan.plan               estimate a layout or search the executable ones; emit a config that trains
    launch.prepare          check a run config for a job (layout validator, memory fit) before anything starts
    jobs.jobs / jobs.job    Slurm jobs, one job's state and log tail
    cluster.show / probe    a cluster spec's numbers; measure this machine (and refresh `--cluster local`)
"""
