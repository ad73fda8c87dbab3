"""DOTA class lists, in label order (the order MMRotate's DOTADataset uses)."""

from __future__ import annotations

DOTA_V1_0: tuple[str, ...] = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)
DOTA_V1_5: tuple[str, ...] = (*DOTA_V1_0, "container-crane")
DOTA_V2_0: tuple[str, ...] = (*DOTA_V1_5, "airport", "helipad")

CLASSES_BY_VERSION: dict[str, tuple[str, ...]] = {"v1.0": DOTA_V1_0, "v1.5": DOTA_V1_5, "v2.0": DOTA_V2_0}


def classes_for(version: str) -> tuple[str, ...]:
    try:
        return CLASSES_BY_VERSION[version]
    except KeyError:
        from rotld_cli.errors import UsageError

        raise UsageError(
            f"--dota-version: unknown version {version!r}; choose one of {', '.join(CLASSES_BY_VERSION)}"
        ) from None
