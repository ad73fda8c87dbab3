"""Where an image lies on the map: its CRS and affine geotransform, and pixel polygons mapped through them.

A source is georeferenced when GDAL gives it a geotransform (not the identity GDAL reports for an
image without one) and a CRS that is geographic or projected (compound CRSs by their horizontal
part). Pixel coordinates are GDAL's: (0, 0) is the top-left corner of the top-left pixel, x to the
right, y down, which is also how the detector's boxes are measured, so a corner (x, y) lies at
`(a*x + b*y + c, d*x + e*y + f)` — exact for rotated and non-square pixels, as a GeoTIFF or world
file states them. Reprojection (`--to-crs`) moves each polygon's corners with pyproj (always x/y =
easting/northing or lon/lat order); the edges between them stay straight, which is within a
fraction of a pixel for boxes of a few hundred pixels.

Sources that are not georeferenced keep pixel coordinates, in an engineering CRS named
"image pixels" so a GIS never mistakes them for longitudes and latitudes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rotld_cli.errors import UsageError

PIXEL_CRS_WKT = (
    'LOCAL_CS["image pixels (x right, y down)",LOCAL_DATUM["image",0],UNIT["pixel",1],AXIS["x",EAST],AXIS["y",SOUTH]]'
)


@dataclass(frozen=True)
class GeoReference:
    """A CRS (WKT, as GDAL reads it) and the affine (a, b, c, d, e, f): x' = a*x + b*y + c, y' = d*x + e*y + f."""

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]

    def to_dict(self) -> dict:
        return {"crs": self.crs_wkt, "transform": list(self.transform), "epsg": epsg_code(self.crs_wkt)}

    @classmethod
    def from_dict(cls, data: dict | None) -> GeoReference | None:
        if not data:
            return None
        return cls(str(data["crs"]), tuple(float(v) for v in data["transform"]))  # type: ignore[arg-type]


def usable_crs_problem(crs_wkt: str | None) -> str | None:
    """Why a CRS cannot place the image on a map (None: it can)."""
    if not crs_wkt:
        return "it has no CRS"
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_wkt(crs_wkt)
    except CRSError as exc:
        return f"its CRS cannot be read ({str(exc).splitlines()[0]})"
    if not (crs.is_geographic or crs.is_projected):
        return f"its CRS cannot be read (GDAL gives only the {crs.type_name} {crs.name!r})"
    return None


def epsg_code(crs_wkt: str) -> int | None:
    """The EPSG code of a CRS when it has one (exactly, not by a loose match)."""
    from pyproj import CRS

    return CRS.from_wkt(crs_wkt).to_epsg(min_confidence=100)


def affine_points(points: np.ndarray, transform: tuple[float, ...]) -> np.ndarray:
    """(..., 2) pixel points -> map points by the affine, in float64 (a*x + b*y + c, d*x + e*y + f)."""
    a, b, c, d, e, f = transform
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[..., 0], pts[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


def parse_crs(text: str, option: str = "--to-crs") -> str:
    """A user's CRS (EPSG:4326, a WKT, a PROJ string, ...) -> its WKT; a one-line usage error if pyproj refuses it."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(text)
    except CRSError as exc:
        raise UsageError(f"{option} {text}: not a CRS pyproj knows ({str(exc).splitlines()[0]})") from None
    if not (crs.is_geographic or crs.is_projected):
        raise UsageError(f"{option} {text}: a geographic or projected CRS is needed, this is a {crs.type_name}")
    return crs.to_wkt()


class Reprojection:
    """Points from one CRS to another (pyproj, x/y order: lon/lat for geographic CRSs)."""

    def __init__(self, source_wkt: str, target_wkt: str) -> None:
        from pyproj import CRS, Transformer

        self._transformer = Transformer.from_crs(CRS.from_wkt(source_wkt), CRS.from_wkt(target_wkt), always_xy=True)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64)
        x, y = self._transformer.transform(pts[..., 0].ravel(), pts[..., 1].ravel(), errcheck=True)
        return np.stack([np.asarray(x).reshape(pts.shape[:-1]), np.asarray(y).reshape(pts.shape[:-1])], axis=-1)
