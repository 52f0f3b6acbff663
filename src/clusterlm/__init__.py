"""clusterlm: build a language model end to end and plan/run it on an HPC cluster."""

__version__ = "0.1.0"
