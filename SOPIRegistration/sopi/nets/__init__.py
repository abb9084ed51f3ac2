"""Networks in plain torch: the RTPI pose-initialisation network and its inputs."""

from .inputs import ct_cube, standardize_xray
from .rtpi import RTPI, RTPIConfig

__all__ = ["RTPI", "RTPIConfig", "ct_cube", "standardize_xray"]
