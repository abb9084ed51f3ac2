"""Training the networks on DRRs simulated online: cases, augmentation, the shared loop, DDP.

``train(lambda context: RTPITask(pairs, geometry, config, settings, context), out_dir, OptimSettings())``
is what ``sopi train rtpi`` runs (also under ``torchrun``).
"""

from .augmentation import AugmentSettings, augment_xrays
from .rtpi import RTPISettings, RTPITask
from .trainer import OptimSettings, train

__all__ = ["AugmentSettings", "OptimSettings", "RTPISettings", "RTPITask", "augment_xrays", "train"]
