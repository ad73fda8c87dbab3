"""SOURCE arguments -> the image files to predict on: files, folders (not recursive) and globs.

Images are known by their suffix: OpenCV's (PNG, JPEG, BMP) and the rasters GDAL reads that aerial
imagery comes in (GeoTIFF and COG, JPEG2000, VRT, ERDAS Imagine, NITF). A file named on the
command line with another suffix is still tried with GDAL (it reads many more formats); folders and
patterns pick only the suffixes listed.
"""

from __future__ import annotations

import glob
from pathlib import Path

from rotld_cli.errors import UsageError

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".j2k", ".vrt", ".img", ".ntf", ".nitf")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", *RASTER_SUFFIXES)
_GLOB_CHARS = set("*?[")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def expand_source(source: str) -> list[Path]:
    """The images one SOURCE names, sorted; a SOURCE that names none is a usage error."""
    path = Path(source)
    if path.is_file():
        return [path]  # GDAL decides what it reads; an unreadable file is reported with the other images
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if _is_image(p))
        if not found:
            raise UsageError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return found
    if _GLOB_CHARS & set(source):
        found = sorted(p for p in map(Path, glob.glob(source, recursive=True)) if _is_image(p))
        if not found:
            raise UsageError(f"{source}: the pattern matches no image file ({', '.join(IMAGE_SUFFIXES)})")
        return found
    raise UsageError(f"{source}: no such file, folder or pattern")


def collect_sources(sources: list[str]) -> list[Path]:
    """Every image of every SOURCE, each once, in argument order.

    The image id (the file's stem) names the image in the Task1 files, so two files with the same
    stem would mix their detections: that is refused up front, naming both files.
    """
    images: list[Path] = []
    seen: set[Path] = set()
    by_id: dict[str, Path] = {}
    for source in sources:
        for path in expand_source(source):
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            other = by_id.setdefault(path.stem, path)
            if other is not path:
                raise UsageError(f"{other} and {path}: two images with the id {path.stem!r} (image ids are file stems)")
            images.append(path)
    if not images:
        raise UsageError("no SOURCE images given")
    return images
