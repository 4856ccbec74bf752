"""Thin commands behind `sfa` (the table and exit codes live in `service.__main__`).

Each module has `add_arguments(parser)` and `run(args[, settings]) -> exit code`.
"""
