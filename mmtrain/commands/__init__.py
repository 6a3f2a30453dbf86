"""Subcommands of the `mmtrain` CLI: each module has `add_parser(sub)` and `run(args)`.

Building the parser must stay light (`mmtrain --help` and argument errors answer without
importing torch, SciPy, scikit-learn or datasets): the modules import what a command needs
inside `run`, and names the parser offers as choices are listed here.
"""

#: `mmtrain.paper.EXPERIMENTS`, without importing it (a test keeps the two equal)
EXPERIMENT_NAMES = ("linear-gaussian", "ivae-bimodal", "ivae-multimodal")
