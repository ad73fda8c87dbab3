"""rotld's MMRotate plugins, registered under the seed's type names on import.

`RotatedRetinaHeadDistribution`, `LDRotatedRetinaHead`,
`KnowledgeDistillationRotatedSingleStageDetector` and `IMLoss` go into mmrotate's registries
(mmdet's MODELS), so a seed config builds by name. Import through `rotld_cli.engine.load_engine()`,
which applies the compat shims first.
"""

from rotld_cli.engine.models import distribution_head, kd_detector, ld_head, losses  # noqa: F401
