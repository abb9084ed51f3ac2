"""Training the networks on DRRs simulated online: cases, augmentation, the shared loop, DDP.

``train(lambda context: RTPITask(pairs, geometry, config, settings, context), out_dir, OptimSettings())``
is what ``sopi train rtpi`` runs (also under ``torchrun``); ``FineTask`` with an
``EncoderConfig`` is ``sopi train fine``.
"""

from .augmentation import AugmentSettings, augment_xrays
from .fine import FineSettings, FineTask
from .rtpi import RTPISettings, RTPITask
from .trainer import OptimSettings, train

__all__ = ["AugmentSettings", "FineSettings", "FineTask", "OptimSettings", "RTPISettings", "RTPITask", "augment_xrays", "train"]
