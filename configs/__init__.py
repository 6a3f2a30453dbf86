"""The YAML configs shipped with mmtrain (installed as `mmtrain.configs`): the quick-start
and digits jobs, and the paper's experiments in `paper/` (`mmtrain.paper.config_path`)."""
