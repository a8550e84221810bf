"""A training run's surroundings: config files, console, run outputs, model card, Hub push."""
