"""Subcommands of the `mmtrain` CLI: each module has `add_parser(sub)` and `run(args)`."""
