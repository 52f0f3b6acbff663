"""Command-line interface: `clusterlm <verb>`, one module per verb."""
