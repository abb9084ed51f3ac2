"""Physics-based simulation of intra-operative X-rays from a CT (seeded, documented ranges).

A clean DRR is a monochromatic line integral with no scatter, noise or field limits.
:func:`simulate_xray` adds, in the order a C-arm produces them:

1. **Two materials, polychromatic beam.** The CT splits into soft tissue and bone
   (logistic step at 250 HU, 50 HU wide); each is projected and weighted,
   ``p = w_soft p_soft + w_bone p_bone``, then hardened, ``p / (1 + h p)``.
2. **Instruments** not in the pre-operative CT: K-wires, pedicle screws and retractor
   blades, drawn in the detector plane as cylinders or plates of metal whose line
   integral is ``mu_metal x chord``.
3. **Collimation and field of view**: rectangular collimator blades that pass a
   fraction ``t`` of the beam, and an image intensifier's circular field, outside which the
   image holds one constant.
4. **Scatter**: a wide Gaussian of the primary fluence within the open field, scaled to a
   scatter-to-primary ratio.
5. **Quantum noise**: Poisson counts, ``photons`` quanta per pixel at the detector behind the
   patient (automatic exposure control: at the median of the exposed field's centre).
6. **Detector blur**: a Gaussian point-spread function.
7. **Read-out**: ``-log(N / N0)`` (log image, bone bright); optionally saturation at the
   direct-exposure end, vendor processing (gamma and unsharp masking), or the raw counts
   (``raw_output``: bone dark, to be read with polarity ``intensity``).

Ranges (:data:`RANGES`) and their sources are in ``docs/xray_realism.md``. Every draw comes
from a :class:`torch.Generator`, so a seed gives the same image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .drr import Projector
from .filters import gaussian_blur
from .geometry import CArmGeometry
from .preprocess import hu_to_attenuation
from .volume import Volume

__all__ = ["RANGES", "Instrument", "RealismDraw", "draw_realism", "exposure_reference", "simulate_xray"]

#: (low, high) of every drawn parameter; see docs/xray_realism.md for the sources.
RANGES: dict[str, tuple[float, float]] = {
    "soft_weight": (0.85, 1.15),  # effective soft-tissue attenuation relative to 70 keV water
    "bone_weight": (0.7, 1.4),  # bone relative to soft tissue: 60-120 kVp spectra
    "hardening": (0.0, 0.08),  # 1/(line integral): beam hardening p -> p / (1 + h p)
    "scatter_to_primary": (0.2, 1.5),  # SPR: with a grid about 0.2-1, without up to several
    "scatter_sigma_mm": (20.0, 60.0),  # width of the scatter kernel on the detector
    "photons": (300.0, 8000.0),  # quanta per (binned) pixel at the detector behind the patient (see RealismDraw); log-uniform
    "blur_px": (0.3, 1.2),  # detector point-spread sigma
    "blade_transmission": (0.005, 0.05),  # collimator leakage fraction
    "blade_depth": (0.05, 0.25),  # fraction of the detector width a closed blade covers
    "fov_radius": (0.42, 0.6),  # image-intensifier field radius / detector width
    "gamma": (0.7, 1.4),  # vendor display gamma
    "unsharp_amount": (0.3, 1.2),  # vendor unsharp masking
    "unsharp_sigma_px": (4.0, 16.0),
}

#: Linear attenuation of instrument metals at about 70 keV effective energy (1/mm).
_METALS = {"titanium": 0.12, "steel": 0.45}


@dataclass
class Instrument:
    """A metal object in the detector plane (pixels): a cylinder or a plate from ``start`` to ``end``."""

    kind: str  # "k-wire", "screw" or "retractor"
    start: tuple[float, float]  # (col, row)
    end: tuple[float, float]
    width_px: float  # diameter (cylinders) or width (plates)
    mu_per_px: float  # attenuation per pixel of path (1/mm x mm per pixel)
    plate_thickness_px: float = 0.0  # plates only: metal thickness along the beam


@dataclass
class RealismDraw:
    """One case's parameters (see :data:`RANGES`); recorded beside the simulated image."""

    soft_weight: float = 1.0
    bone_weight: float = 1.0
    hardening: float = 0.0
    scatter_to_primary: float = 0.0
    scatter_sigma_mm: float = 40.0
    photons: float = 0.0  # 0: no noise
    # True: ``photons`` are the quanta per pixel where the detector's dose is controlled, the median
    # of the exposed field's central half, as automatic exposure control holds it (the detector doses
    # the range comes from are behind the patient); False: quanta per pixel of unattenuated beam (the
    # first version, which left 10-250 quanta behind a lumbar spine)
    exposure_control: bool = True
    blur_px: float = 0.0
    blades: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # left, right, top, bottom: fraction covered
    blade_transmission: float = 0.02
    fov_radius: float = 0.0  # 0: no circular field
    fov_center: tuple[float, float] = (0.5, 0.5)  # (col, row) as fractions of the detector
    outside_value: str = "low"  # "low" or "high": what the read-out shows outside the circular field
    instruments: list[Instrument] = field(default_factory=list)
    saturation: float = 0.0  # fraction of the darkest (least attenuated) pixels clipped
    gamma: float = 1.0
    unsharp_amount: float = 0.0
    unsharp_sigma_px: float = 8.0
    raw_output: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator, dtype=torch.float64))


def _chance(generator: torch.Generator, probability: float) -> bool:
    return float(torch.rand(1, generator=generator, dtype=torch.float64)) < probability


def draw_realism(
    generator: torch.Generator,
    geometry: CArmGeometry,
    *,
    instruments: tuple[int, int] = (1, 3),
    raw_output: bool = False,
    exposure_control: bool = True,
) -> RealismDraw:
    """Draw one case: every effect always on, collimation and circular field each 70 % of the time.

    Args:
        generator: the case's random stream.
        geometry: the detector (instrument sizes are converted from mm to its pixels).
        instruments: (min, max) number of metal objects.
        raw_output: give raw counts (bone dark) instead of the log image.
        exposure_control: ``photons`` at the detector behind the patient (True) or per pixel of
            unattenuated beam (False, the first version); the other draws are the same.
    """
    r = {name: _uniform(generator, *bounds) for name, bounds in RANGES.items() if name != "photons"}
    photons = math.exp(_uniform(generator, math.log(RANGES["photons"][0]), math.log(RANGES["photons"][1])))
    blades = (0.0, 0.0, 0.0, 0.0)
    if _chance(generator, 0.7):
        blades = tuple(_uniform(generator, *RANGES["blade_depth"]) if _chance(generator, 0.6) else 0.0 for _ in range(4))
    fov_radius, fov_center = 0.0, (0.5, 0.5)
    if _chance(generator, 0.7):
        fov_radius = r["fov_radius"]
        fov_center = (0.5 + _uniform(generator, -0.04, 0.04), 0.5 + _uniform(generator, -0.04, 0.04))
    count = int(torch.randint(instruments[0], instruments[1] + 1, (1,), generator=generator))
    return RealismDraw(
        soft_weight=r["soft_weight"], bone_weight=r["bone_weight"], hardening=r["hardening"],
        scatter_to_primary=r["scatter_to_primary"], scatter_sigma_mm=r["scatter_sigma_mm"], photons=photons,
        blur_px=r["blur_px"], blades=blades, blade_transmission=r["blade_transmission"], fov_radius=fov_radius,
        fov_center=fov_center, outside_value="low" if _chance(generator, 0.5) else "high",
        instruments=[_draw_instrument(generator, geometry) for _ in range(count)],
        saturation=_uniform(generator, 0.01, 0.05) if _chance(generator, 0.3) else 0.0,
        gamma=r["gamma"] if _chance(generator, 0.5) else 1.0,
        unsharp_amount=r["unsharp_amount"] if _chance(generator, 0.4) else 0.0,
        unsharp_sigma_px=r["unsharp_sigma_px"], raw_output=raw_output, exposure_control=exposure_control,
    )


def _draw_instrument(generator: torch.Generator, geometry: CArmGeometry) -> Instrument:
    """A K-wire, pedicle screw or retractor blade near the image centre (sizes in mm at the detector)."""
    mm_per_px = sum(geometry.pixel_spacing_mm) / 2
    magnification = geometry.sdd_mm / geometry.source_to_isocenter_mm
    kind = ("k-wire", "screw", "retractor")[int(torch.randint(0, 3, (1,), generator=generator))]
    centre = (
        geometry.cols * _uniform(generator, 0.25, 0.75),
        geometry.rows * _uniform(generator, 0.25, 0.75),
    )
    angle = _uniform(generator, 0.0, math.pi)
    if kind == "k-wire":  # 1.6-2.5 mm steel wire, 80-200 mm of it in view
        length, width, metal, thickness = _uniform(generator, 80, 200), _uniform(generator, 1.6, 2.5), "steel", 0.0
    elif kind == "screw":  # pedicle screw: 5.5-7.5 mm, 35-55 mm long, titanium
        length, width, metal, thickness = _uniform(generator, 35, 55), _uniform(generator, 5.5, 7.5), "titanium", 0.0
    else:  # retractor blade: 15-25 mm wide steel plate, 1-2 mm thick, 60-120 mm in view
        length, width, metal, thickness = _uniform(generator, 60, 120), _uniform(generator, 15, 25), "steel", _uniform(generator, 1, 2)
    half = 0.5 * length * magnification / mm_per_px
    dx, dy = half * math.cos(angle), half * math.sin(angle)
    return Instrument(
        kind=kind, start=(centre[0] - dx, centre[1] - dy), end=(centre[0] + dx, centre[1] + dy),
        width_px=width * magnification / mm_per_px, mu_per_px=_METALS[metal] * mm_per_px / magnification,
        plate_thickness_px=thickness * magnification / mm_per_px,
    )


def instrument_line_integrals(instruments: list[Instrument], shape: tuple[int, int]) -> torch.Tensor:
    """``(rows, cols)`` line integrals of the instruments (dimensionless)."""
    rows, cols = shape
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")
    total = torch.zeros(rows, cols, dtype=torch.float64)
    for item in instruments:
        (x0, y0), (x1, y1) = item.start, item.end
        length = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        along = (col - x0) * ux + (row - y0) * uy
        across = (col - x0) * -uy + (row - y0) * ux
        inside = (along >= 0) & (along <= length)
        radius = item.width_px / 2
        if item.kind == "retractor":  # a plate seen face-on: constant thickness
            chord = torch.where(across.abs() <= radius, torch.full_like(across, item.plate_thickness_px), torch.zeros_like(across))
        else:  # a cylinder seen side-on: chord 2 sqrt(r^2 - d^2)
            chord = 2.0 * torch.sqrt((radius**2 - across.square()).clamp(min=0.0))
        total += torch.where(inside, chord * item.mu_per_px, torch.zeros_like(chord))
    return total


def field_masks(draw: RealismDraw, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(open_field, inside_fov)`` bool masks: outside the blades, and inside the circular field."""
    rows, cols = shape
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")
    left, right, top, bottom = draw.blades
    open_field = (col >= left * cols) & (col < cols * (1 - right)) & (row >= top * rows) & (row < rows * (1 - bottom))
    inside = torch.ones(rows, cols, dtype=torch.bool)
    if draw.fov_radius > 0:
        cx, cy = draw.fov_center[0] * cols, draw.fov_center[1] * rows
        inside = (col + 0.5 - cx).square() + (row + 0.5 - cy).square() <= (draw.fov_radius * cols) ** 2
    return open_field, inside


def material_volume(ct: Volume) -> Volume:
    """Two channels on the CT grid: soft-tissue and bone attenuation (1/mm at 70 keV)."""
    hu = ct.data.to(torch.float32)
    mu = hu_to_attenuation(hu)
    bone = torch.sigmoid((hu - 250.0) / 50.0)
    return ct.with_data(torch.stack([mu * (1 - bone), mu * bone]))


def simulate_xray(
    ct: Volume | Projector,
    geometry: CArmGeometry,
    camera_from_world: torch.Tensor,
    draw: RealismDraw,
    generator: torch.Generator,
    step_mm: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A realistic ``(rows, cols)`` float32 X-ray of ``ct`` (HU) at ``camera_from_world``.

    ``ct`` may instead be a :class:`Projector` of :func:`material_volume` on ``geometry``
    (to reuse it across cases). The result is a log image (bone bright) unless
    ``draw.raw_output``.
    """
    projector = ct if isinstance(ct, Projector) else Projector(material_volume(ct), geometry, step_mm=step_mm).to(device)
    with torch.no_grad():
        soft, bone = projector(camera_from_world.to(device)).to(torch.float64).cpu()
    shape = geometry.shape
    line = draw.soft_weight * soft + draw.bone_weight * bone
    line = line / (1.0 + draw.hardening * line)
    line = line + instrument_line_integrals(draw.instruments, shape)
    open_field, inside = field_masks(draw, shape)
    primary = torch.exp(-line) * torch.where(open_field, 1.0, draw.blade_transmission)
    if draw.scatter_to_primary > 0:
        sigma_px = draw.scatter_sigma_mm / (sum(geometry.pixel_spacing_mm) / 2)
        blurred = gaussian_blur(primary * open_field, sigma_px, mode="reflect")
        level = primary[open_field].mean() if bool(open_field.any()) else primary.mean()
        scatter = draw.scatter_to_primary * float(level) * blurred / blurred[open_field].mean().clamp(min=1e-12) if bool(open_field.any()) else 0.0
        fluence = primary + scatter
    else:
        fluence = primary
    quanta = draw.photons / exposure_reference(fluence, open_field & inside) if draw.exposure_control else draw.photons
    if quanta > 0:  # quanta per pixel of unattenuated beam
        counts = torch.poisson(fluence * quanta, generator=generator) / quanta
    else:
        counts = fluence
    floor = 0.5 / quanta if quanta > 0 else 1e-12  # half a quantum: a log of zero counts is undefined
    counts = gaussian_blur(counts, draw.blur_px, mode="reflect").clamp(min=floor)
    if draw.raw_output:
        image = counts
        outside = float(image.max()) if draw.outside_value == "high" else 0.0
    else:
        image = -torch.log(counts)
        if draw.saturation > 0:  # the detector saturates where the beam is strongest
            image = image.clamp(min=float(torch.quantile(image[inside].flatten()[:: max(1, int(inside.sum()) // 100000)], draw.saturation)))
        image = _vendor_processing(image, inside, draw)
        outside = float(image[inside].max()) if draw.outside_value == "high" else float(image[inside].min())
    image = torch.where(inside, image, torch.full_like(image, outside))
    return image.to(torch.float32)


def exposure_reference(fluence: torch.Tensor, exposed: torch.Tensor) -> float:
    """The fluence (relative to the unattenuated beam) automatic exposure control holds at its
    set dose: the median over the exposed pixels in the detector's central half (rows and
    columns), where a measuring field sits; over every exposed pixel when none is central."""
    rows, cols = fluence.shape
    central = torch.zeros_like(exposed)
    central[rows // 4: rows - rows // 4, cols // 4: cols - cols // 4] = True
    chosen = exposed & central if bool((exposed & central).any()) else exposed
    values = fluence[chosen] if bool(chosen.any()) else fluence.flatten()
    return max(float(values.median()), 1e-9)


def _vendor_processing(image: torch.Tensor, inside: torch.Tensor, draw: RealismDraw) -> torch.Tensor:
    """Unsharp masking and a display gamma on the log image (values kept in their range)."""
    if draw.unsharp_amount > 0:
        image = image + draw.unsharp_amount * (image - gaussian_blur(image, draw.unsharp_sigma_px, mode="reflect"))
    if draw.gamma != 1.0:
        low, high = float(image[inside].min()), float(image[inside].max())
        span = max(high - low, 1e-9)
        image = low + span * ((image - low) / span).clamp(0, 1) ** draw.gamma
    return image
