"""The DOTA toolkit: formats, split, merge, rotated IoU and NMS.

Pure Python + numpy + shapely + OpenCV. Never imports mmcv, mmdet or mmrotate, so every command
built on it runs in seconds without the training engine.
"""
