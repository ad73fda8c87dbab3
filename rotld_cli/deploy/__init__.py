"""Run an exported rotld model without the engine: ONNX metadata, pre-/post-processing, the runner.

Nothing here imports torch, mmcv, mmdet or mmrotate: a deployment box needs numpy, OpenCV and
onnxruntime only. The graph holds the network (backbone, FPN, head); everything after the head
(integral, anchors, box decoding, rotated NMS) is numpy code that reproduces mmrotate's
`_get_bboxes_single` for the distribution head (method.md §1.7).
"""
