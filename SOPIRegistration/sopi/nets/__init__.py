"""Networks in plain torch: RTPI (pose initialisation), the fine module's composite encoders, their inputs."""

from .encoder import CompositeEncoder, EncoderConfig, FineNet
from .inputs import ct_cube, standardize_xray
from .rtpi import RTPI, RTPIConfig

__all__ = ["RTPI", "CompositeEncoder", "EncoderConfig", "FineNet", "RTPIConfig", "ct_cube", "standardize_xray"]
