"""rotld's MMRotate plugins, registered under the seed's type names on import.

`RotatedRetinaHeadDistribution`, `LDRotatedRetinaHead`,
`KnowledgeDistillationRotatedSingleStageDetector` and `IMLoss` go into mmrotate's registries
(with rotld's successors `CrossKDRotatedRetinaHead`, `BCKDRotatedRetinaHead`, `BinaryKDLoss` and
`RotatedIoUKDLoss`) (mmdet's MODELS), so a seed config builds by name; the assigner's
`SparseRBboxOverlaps2D` goes into the IoU calculators. The other detector families: rotated FCOS
(`fcos`), rotated ATSS (`atss`, with its CPU-capable `RotatedATSSAssigner`) and Oriented R-CNN
(`orcnn`, with the two-stage KD detector in `kd_detector`). Import through `rotld_cli.engine.load_engine()`,
which applies the compat shims first.
"""

from rotld_cli.engine.models import (  # noqa: F401
    atss,
    bckd_head,
    crosskd_head,
    distribution_head,
    fcos,
    kd_detector,
    kd_losses,
    ld_head,
    losses,
    orcnn,
    rotated_overlaps,
)
