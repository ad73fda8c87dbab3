"""rotld's MMRotate plugins, registered under the seed's type names on import.

`RotatedRetinaHeadDistribution`, `LDRotatedRetinaHead`,
`KnowledgeDistillationRotatedSingleStageDetector` and `IMLoss` go into mmrotate's registries
(with rotld's successors `CrossKDRotatedRetinaHead`, `BCKDRotatedRetinaHead`, `BinaryKDLoss` and
`RotatedIoUKDLoss`) (mmdet's MODELS), so a seed config builds by name; the assigner's
`SparseRBboxOverlaps2D` goes into the IoU calculators. Import through `rotld_cli.engine.load_engine()`,
which applies the compat shims first.
"""

from rotld_cli.engine.models import (  # noqa: F401
    bckd_head,
    crosskd_head,
    distribution_head,
    kd_detector,
    kd_losses,
    ld_head,
    losses,
    rotated_overlaps,
)
