"""The embedded toy model: styles, training data, architecture, trainer and evaluation."""
