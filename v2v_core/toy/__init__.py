"""The embedded toy model: styles, training data, architecture, trainer and evaluation."""
from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"   # the shipped weights (a diffusers pipeline folder)
