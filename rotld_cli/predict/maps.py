"""Map outputs of `rotld predict`: GeoJSON and GeoPackage, rebuilt from the per-image JSONs.

Like the Task1 files, they are written at the end of every run from all finished images' JSONs
(which carry each image's georeference), so a resumed run, or a rerun that only adds `--gpkg`,
writes exactly what one run would, without predicting again.

* `--geojson`: `geojson/<image id>.geojson`, one FeatureCollection per image.
* `--geojson-merged`: `detections.geojson`, every image's detections in one FeatureCollection.
* `--gpkg`: `detections.gpkg`, layer `detections` (pyogrio, GDAL's GeoPackage driver).

Each detection is a Polygon of its four corners (the pixel polygon's order, closed) mapped by the
image's affine geotransform (`geo`), in the source's CRS or `--to-crs`; properties: image_id, class,
score and the pixel rotated box (cx, cy, w, h, angle). GeoJSON is written with Python's exact float
repr (no rounding); a CRS other than WGS 84 lon/lat is named in the 2008 `crs` member (an EPSG URN,
else its WKT), which GDAL, QGIS and geopandas read. Images without a georeference are written in
pixel coordinates, in the engineering CRS "image pixels" (`geo.PIXEL_CRS_WKT`). The merged outputs
hold one CRS: images in several CRSs (or georeferenced and pixel images together) need `--to-crs`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rotld_cli.errors import RotldError, UsageError
from rotld_cli.fileio import atomic_path, atomic_write_text
from rotld_cli.predict.geo import PIXEL_CRS_WKT, GeoReference, Reprojection, affine_points, epsg_code, parse_crs
from rotld_cli.predict.outputs import read_result, result_path

GEOJSON_DIR = "geojson"
MERGED_GEOJSON = "detections.geojson"
GPKG = "detections.gpkg"
GPKG_LAYER = "detections"
WGS84_EPSG = 4326


@dataclass(frozen=True)
class MapOptions:
    geojson: bool = False
    geojson_merged: bool = False
    gpkg: bool = False
    to_crs: str | None = None  # as the user gave it

    @property
    def wanted(self) -> bool:
        return self.geojson or self.geojson_merged or self.gpkg

    def validate(self) -> None:
        if self.to_crs is not None:
            if not self.wanted:
                raise UsageError("--to-crs needs --geojson, --geojson-merged or --gpkg")
            parse_crs(self.to_crs)


@dataclass
class ImageFeatures:
    """One image's detections on the map: (n, 5, 2) closed rings, their CRS (WKT), and per-detection properties."""

    image_id: str
    rings: np.ndarray
    crs_wkt: str
    properties: list[dict]
    note: str | None = None  # why these are pixel coordinates, when they are


def image_features(data: dict, target_wkt: str | None) -> ImageFeatures:
    """A per-image result JSON -> its polygons on the map (`target_wkt`: reproject to it)."""
    detections = data["detections"]
    pixel = np.asarray([d["polygon"] for d in detections], dtype=np.float64).reshape(-1, 4, 2)
    properties = [
        {"image_id": data["image_id"], "class": d["class"], "score": d["score"], **d["rbox"]} for d in detections
    ]
    georef = GeoReference.from_dict(data.get("georef"))
    if georef is None:
        note = None if target_wkt is None else f"{data['image_id']}: not georeferenced, kept in pixel coordinates"
        return ImageFeatures(data["image_id"], _closed(pixel), PIXEL_CRS_WKT, properties, note)
    points = affine_points(pixel, georef.transform)
    crs_wkt = georef.crs_wkt
    if target_wkt is not None and len(points):
        try:
            points = Reprojection(georef.crs_wkt, target_wkt)(points)
        except Exception as exc:  # pyproj's ProjError: a point outside the target's domain
            raise RotldError(f"{data['image']}: cannot reproject to --to-crs ({str(exc).splitlines()[0]})") from None
    if target_wkt is not None:
        crs_wkt = target_wkt
    return ImageFeatures(data["image_id"], _closed(points), crs_wkt, properties)


def _closed(corners: np.ndarray) -> np.ndarray:
    return np.concatenate([corners, corners[:, :1]], axis=1) if len(corners) else np.zeros((0, 5, 2))


def feature_collection(features: Sequence[ImageFeatures]) -> dict:
    """A GeoJSON FeatureCollection of images in one CRS (the crs member unless WGS 84 lon/lat)."""
    crs_wkt = features[0].crs_wkt if features else PIXEL_CRS_WKT
    out: dict = {"type": "FeatureCollection"}
    code = epsg_code(crs_wkt)
    if code != WGS84_EPSG:
        name = f"urn:ogc:def:crs:EPSG::{code}" if code is not None else crs_wkt
        out["crs"] = {"type": "name", "properties": {"name": name}}
    out["features"] = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]}, "properties": props}
        for image in features
        for ring, props in zip(image.rings, image.properties)
    ]
    return out


def _one_crs(features: Sequence[ImageFeatures], what: str) -> None:
    """The merged outputs hold one CRS; several are a usage error naming two images that differ."""
    from pyproj import CRS

    first = features[0]
    for other in features[1:]:
        if other.crs_wkt != first.crs_wkt and not CRS.from_wkt(other.crs_wkt).equals(CRS.from_wkt(first.crs_wkt)):
            raise UsageError(
                f"{what}: images {first.image_id!r} and {other.image_id!r} are in different CRSs "
                f"({_crs_label(first.crs_wkt)}, {_crs_label(other.crs_wkt)}): pass --to-crs (e.g. EPSG:4326) "
                "to put them in one; the per-image results are kept, a rerun only writes the files"
            )


def _crs_label(crs_wkt: str) -> str:
    if crs_wkt == PIXEL_CRS_WKT:
        return "image pixels"
    code = epsg_code(crs_wkt)
    if code is not None:
        return f"EPSG:{code}"
    from pyproj import CRS

    return CRS.from_wkt(crs_wkt).name


def write_gpkg(path: Path, features: Sequence[ImageFeatures]) -> None:
    """One GeoPackage layer `detections` (written to a temp file, renamed when complete)."""
    import warnings

    import shapely
    from pyogrio.raw import write

    rings = np.concatenate([f.rings for f in features]) if features else np.zeros((0, 5, 2))
    props = [p for f in features for p in f.properties]
    geometry = shapely.to_wkb(shapely.polygons(rings)) if len(rings) else np.zeros(0, dtype=object)
    columns = {
        "image_id": np.array([p["image_id"] for p in props], dtype=object),
        "class": np.array([p["class"] for p in props], dtype=object),
        "score": np.array([p["score"] for p in props], dtype=np.float64),
    }
    for key in ("cx", "cy", "w", "h", "angle"):
        columns[key] = np.array([p[key] for p in props], dtype=np.float64)
    crs_wkt = features[0].crs_wkt if features else PIXEL_CRS_WKT
    with atomic_path(path) as tmp:
        tmp.unlink()  # GDAL creates the database itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyogrio's notes on the layer creation: not the user's concern
            write(str(tmp), geometry, list(columns.values()), list(columns), layer=GPKG_LAYER, driver="GPKG",
                  crs=crs_wkt, geometry_type="Polygon")  # fmt: skip


def _finished(out_dir: Path, image_id: str) -> dict:
    """One finished image's result JSON (a RotldError naming the file when it cannot be read)."""
    data = read_result(result_path(out_dir, image_id))
    if data is None:
        raise RotldError(f"{result_path(out_dir, image_id)}: cannot read the image's result")
    return data


def write_map_outputs(out_dir: Path, image_ids: Sequence[str], options: MapOptions) -> tuple[list[Path], list[str]]:
    """The map files `options` asks for, from the finished images' JSONs -> (files written, notes)."""
    if not options.wanted:
        return [], []
    target = parse_crs(options.to_crs) if options.to_crs else None
    features = [image_features(_finished(out_dir, image_id), target) for image_id in sorted(image_ids)]
    notes = [f.note for f in features if f.note]
    written = []
    if options.geojson:
        for image in features:
            path = out_dir / GEOJSON_DIR / f"{image.image_id}.geojson"
            atomic_write_text(path, json.dumps(feature_collection([image])))
            written.append(path)
    merged = [name for name, on in (("--geojson-merged", options.geojson_merged), ("--gpkg", options.gpkg)) if on]
    if merged and features:
        _one_crs(features, " and ".join(merged))
    if options.geojson_merged:
        atomic_write_text(out_dir / MERGED_GEOJSON, json.dumps(feature_collection(features)))
        written.append(out_dir / MERGED_GEOJSON)
    if options.gpkg:
        write_gpkg(out_dir / GPKG, features)
        written.append(out_dir / GPKG)
    return written, notes
