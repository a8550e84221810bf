"""A training run's surroundings: config files, console, run outputs, model card, Hub push, and its safety:
atomic checkpoints, the log_path lock, the NaN policy, signals, multi-process launch checks."""
