"""V2V Studio core: backbones, the streaming engine, temporal methods, metrics and video I/O.

Importing this package is cheap (no torch, no model): heavy modules load when first used.
"""
from .errors import V2VError

__all__ = ["V2VError"]
__version__ = "0.1.0"
