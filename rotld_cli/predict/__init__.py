"""`rotld predict`: a detector over full-size images of any size (engine-free orchestration).

sources (which files) -> reader (window pixels, huge images from disk) -> run (windows as
prepare-dota cuts them, batched detection, rotated-NMS merge) -> outputs (per-image JSON, Task1).
The model is any `rotld_cli.detector.Detector`; `backend.load_detector_backend` picks one.
"""
