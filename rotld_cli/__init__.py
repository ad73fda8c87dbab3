"""rotld: Rotated Localization Distillation for oriented object detection on DOTA.

This module stays standard-library only: the bootstrap installer imports it before any
dependency exists.
"""

__version__ = "0.1.0"
