"""`rotld predict`: a detector over full-size images of any size (engine-free orchestration).

sources (which files) -> images (window pixels: OpenCV for PNG/JPEG/BMP, rasterio for every GDAL
raster, read window by window; `pixels` holds the band, scaling and nodata rules, `geo` the
georeference) -> run (windows as prepare-dota cuts them, batched detection, rotated-NMS merge) ->
outputs (per-image JSON, Task1) and maps (GeoJSON, GeoPackage), both rebuilt from the JSONs.
The model is any `rotld_cli.detector.Detector`; `backend.load_detector_backend` picks one.
"""
