"""hpstudy: hyperparameter studies for classic deep-learning training experiments."""

__version__ = "0.1.0"
