"""Differentiable cone-beam DRR by trilinear ray marching on shared sample planes.

The ProST design: for every detector pixel the ray from the X-ray source to the
pixel centre is sampled between its entry into and exit from the volume, the
volume is interpolated trilinearly at the samples, and the pixel value is the sum
of the samples times the step length (a line integral, value x mm).

Samples are placed where the rays cross ``N`` planes perpendicular to the volume
axis most aligned with the rays (a Joseph-style plane sweep), evenly spaced across
the *support box*: the box one voxel beyond the outermost non-zero voxels, outside
which the interpolant (zero-padded) vanishes. For a ray entering and leaving
through the two faces perpendicular to that axis, these are exactly ``N`` evenly
spaced samples between its entry and exit. A trilinear sample on a plane between
slices ``k`` and ``k + 1`` is a bilinear sample of the blended slice
``(1 - f) V[k] + f V[k + 1]``; the blended slices do not depend on the pose and are
cached, so one render is a single batched 2D ``grid_sample`` (vectorised on CPU,
one kernel on CUDA) with no Python loop over rays or samples. Each sample weighs
its ray's step between planes, ``ray_length_mm * dz / |d_axis|``.

``N = n_samples`` if given, else the smallest count whose step along every ray is
at most ``step_mm``. Everything is differentiable with respect to the pose (and
the volume). Memory stays bounded: rays are processed in chunks of at most
``max_samples_per_chunk`` samples, the backward pass recomputes each chunk's sample
positions instead of storing them, and blended slices beyond ``max_cache_bytes``
are built plane-chunk by plane-chunk instead of cached.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .geometry import CArmGeometry
from .validate import all_finite, check_allocation
from .volume import Volume

__all__ = ["Projector", "support_box_fraction"]

#: Sweep axis (0 = i, 1 = j, 2 = k) -> (its dim in the (C, K, J, I) tensor, the
#: normalised axes that the blended slices' W and H dims follow).
_SWEEP = {0: (3, (1, 2)), 1: (2, (0, 2)), 2: (1, (0, 1))}
#: Smallest sample spacing along a ray (mm): a tenth of the finest CT voxels.
MIN_STEP_MM = 0.01
#: Most sample planes one render may use (a 1 m ray at 0.015 mm); more would run for hours.
MAX_PLANES = 1 << 16
#: Samples one ``grid_sample`` call reads on the CPU, per thread: the sample grid ``(planes, rays, 2)`` and the output
#: ``(planes, C, rays)`` of a thread's share then stay within its core's cache. With one thread, 2^20 samples per call
#: (as on a GPU) made the 64- and 128-pixel levels' renders a quarter to two fifths slower than 2^17-2^18 on three CTs,
#: forward and with the pose gradient; with two threads and the short OpenMP waits of ``sopi/__init__.py`` each call
#: wakes the other thread, and 2^19 did best (up to a quarter faster than 2^20, the chest CT's 128-pixel renders the
#: same); more threads keep 2^20 (``benchmarks/drr_chunks.py``; docs/benchmarks.md, "The projector's ray chunks").
CPU_SAMPLES_PER_THREAD = 1 << 18
#: The most samples one call reads: on a GPU, where each call is a kernel launch, and on the CPU with four threads or more.
MAX_SAMPLES_PER_CHUNK = 1 << 20
#: Memory per detector pixel that a projector holds and a render touches (points, lengths, rays).
_BYTES_PER_PIXEL = 128


class Projector(nn.Module):
    """Render DRRs of a volume for batches of ``camera_from_world`` poses.

    Args:
        volume: voxels to integrate (already in attenuation units, or a mask);
            ``(K, J, I)`` gives images ``(B, rows, cols)``, ``(C, K, J, I)`` gives
            ``(B, C, rows, cols)`` (for example CT and mask in one pass).
        geometry: the detector.
        step_mm: largest distance between samples along a ray (mm).
        n_samples: fixed number of sample planes (overrides ``step_mm``).
        dtype: floating type of the rendering (float32 by default).
        max_samples_per_chunk: bound on the samples processed at once; by default :data:`MAX_SAMPLES_PER_CHUNK`, on the
            CPU :data:`CPU_SAMPLES_PER_THREAD` per thread of torch's at most (:func:`samples_per_chunk`).
        max_cache_bytes: bound on the cached blended slices.
        planes_like: a projector of another volume on the same grid whose sample planes this one uses (the planes
            span that volume's support box, not this one's): a spine mask rendered with its CT's planes sums exactly
            the samples the CT's DRR sums, at a fraction of the cost (rays that miss the mask's own support box and
            planes between its empty slices are skipped, as they add nothing).
    """

    def __init__(
        self,
        volume: Volume,
        geometry: CArmGeometry,
        step_mm: float = 1.0,
        n_samples: int | None = None,
        dtype: torch.dtype = torch.float32,
        max_samples_per_chunk: int | None = None,
        max_cache_bytes: int = 1 << 30,
        planes_like: Projector | None = None,
    ) -> None:
        super().__init__()
        _check_step(step_mm)
        if n_samples is not None and not 1 <= n_samples <= MAX_PLANES:
            raise InputError(f"projector: n_samples must be in 1..{MAX_PLANES}, got {n_samples!r}")
        _check_detector(geometry)
        self.geometry = geometry
        self.step_mm = float(step_mm)
        self.n_samples = n_samples
        self.max_samples_per_chunk = None if max_samples_per_chunk is None else int(max_samples_per_chunk)
        self.max_cache_bytes = int(max_cache_bytes)
        self.single_channel = volume.data.ndim == 3
        data = (volume.data[None] if self.single_channel else volume.data).to(dtype)
        if not all_finite(data):
            raise InputError("projector: the volume holds NaN or infinite voxels")
        self.register_buffer("volume", data[None].contiguous(), persistent=False)  # (1, C, K, J, I)
        self._slice_cache: dict = {}
        self._occupied: dict = {}  # sweep dim -> (size + 2,) bool: slices holding a non-zero voxel, padded by an empty one
        self._innermost_major: list = []  # the volume with its innermost dim first, once a sweep along it needs it

        grid_size = torch.tensor(volume.grid_shape, dtype=torch.float64)  # (I, J, K)
        # grid_sample's normalised coordinates (align_corners=False): x_n = (2 i + 1) / I - 1.
        normalized_from_index = torch.eye(4, dtype=torch.float64)
        normalized_from_index[:3, :3] = torch.diag(2.0 / grid_size)
        normalized_from_index[:3, 3] = 1.0 / grid_size - 1.0
        self.register_buffer(
            "normalized_from_world", (normalized_from_index @ volume.index_from_world).to(dtype), persistent=False
        )
        low, high = _support_box_index(data)
        self.register_buffer("box_low", ((2.0 * low + 1.0) / grid_size - 1.0).to(dtype), persistent=False)
        self.register_buffer("box_high", ((2.0 * high + 1.0) / grid_size - 1.0).to(dtype), persistent=False)
        self.register_buffer("half_grid", (grid_size / 2.0).to(dtype), persistent=False)  # normalised -> index units
        plane_low, plane_high = self.box_low, self.box_high  # the box the sample planes span
        if planes_like is not None:
            if tuple(planes_like.volume.shape[2:]) != tuple(data.shape[1:]) or not torch.allclose(
                    planes_like.normalized_from_world.cpu().to(torch.float64), self.normalized_from_world.cpu().to(torch.float64)):
                raise InputError("projector: planes_like renders another grid; expected a volume on this volume's grid")
            # planes_like may live on another device already (a held CUDA projector): its box comes here, then moves with .to()
            plane_low, plane_high = (planes_like.plane_low.to(self.box_low), planes_like.plane_high.to(self.box_high))
        self.register_buffer("plane_low", plane_low.clone(), persistent=False)
        self.register_buffer("plane_high", plane_high.clone(), persistent=False)
        detector_points, ray_length_mm = _detector_points_camera(geometry)
        self.register_buffer("detector_points", detector_points.to(dtype), persistent=False)  # (P, 3)
        self.register_buffer("ray_length_mm", ray_length_mm.to(dtype), persistent=False)  # (P,)

    def extra_repr(self) -> str:
        return f"detector={self.geometry.rows}x{self.geometry.cols}, step_mm={self.step_mm}, n_samples={self.n_samples}"

    def _apply(self, fn, recurse=True):  # .to() / .cuda(): cached slices live on the old device
        self._slice_cache = {}  # a new dict: copies made by resized() keep theirs
        self._innermost_major = []
        return super()._apply(fn, recurse)

    def resized(self, rows: int, cols: int) -> Projector:
        """A projector of the same volume (sharing its slice cache) on a detector resampled to ``rows x cols``."""
        return self.on_detector(self.geometry.resized(rows, cols))

    def on_detector(self, geometry: CArmGeometry, step_mm: float | None = None) -> Projector:
        """A projector of the same volume on ``geometry`` (marching at ``step_mm``, default this one's step), sharing
        the volume, its checks, its support box and its slice cache: what a new ``Projector`` would render, without
        reading the volume again (five projectors of a 512 x 512 x 415 CT spent 2 s on that)."""
        if step_mm is not None:
            _check_step(step_mm)
        _check_detector(geometry)
        other = copy.copy(self)
        other._buffers = dict(self._buffers)  # shallow copy shares the volume, not the detector
        other.geometry = geometry
        other.step_mm = self.step_mm if step_mm is None else float(step_mm)
        points, lengths = _detector_points_camera(other.geometry)
        other.detector_points = points.to(self.detector_points)
        other.ray_length_mm = lengths.to(self.ray_length_mm)
        return other

    def forward(self, camera_from_world: torch.Tensor) -> torch.Tensor:
        """Render ``(B, 4, 4)`` (or ``(4, 4)``) poses to ``(B, rows, cols)`` images.

        Multi-channel volumes give ``(B, C, rows, cols)``. Pixel values are line
        integrals of the voxel values along each source-to-pixel ray (value x mm).
        """
        if camera_from_world.shape[-2:] != (4, 4):
            raise InputError(f"projector: poses must be (B, 4, 4), got {tuple(camera_from_world.shape)}")
        if not bool(torch.isfinite(camera_from_world).all()):
            raise InputError("projector: a pose holds NaN or infinite entries; expected finite camera_from_world matrices")
        squeeze = camera_from_world.ndim == 2
        poses = camera_from_world.reshape(-1, 4, 4).to(device=self.volume.device, dtype=self.volume.dtype)
        origin, direction = self._rays_normalized(poses)  # (B, 3), (B, P, 3)
        with torch.no_grad():  # the sweep axis: where the most oblique ray is steepest, per pose
            in_voxels = direction * self.half_grid
            steepness = (in_voxels.abs() / in_voxels.norm(dim=-1, keepdim=True)).amin(dim=1)  # (B, 3)
            axes = steepness.argmax(dim=1).tolist()
        images: list[torch.Tensor | None] = [None] * len(axes)
        for axis in sorted(set(axes)):
            members = [index for index, value in enumerate(axes) if value == axis]
            select = torch.tensor(members, device=poses.device)
            sums = self._sweep(origin[select], direction[select], axis)  # (b, C, P)
            for position, index in enumerate(members):
                images[index] = sums[position]
        stacked = torch.stack(images).reshape(len(axes), -1, self.geometry.rows, self.geometry.cols)
        if self.single_channel:
            stacked = stacked[:, 0]
        return stacked[0] if squeeze else stacked

    def truncated_rays(
        self, camera_from_world: torch.Tensor, threshold: float, inset_voxels: float = 1.5, side_cosine: float = 0.7
    ) -> torch.Tensor:
        """``(B, rows, cols)`` bool: pixels whose ray the CT's own extent cuts, so that the DRR there is not
        what the patient's X-ray shows.

        A ray is cut where it enters or leaves the support box through a side face (one whose normal
        makes an angle of more than ``acos(side_cosine)`` with the ray) at tissue: channel 0 above
        ``threshold``, ``inset_voxels`` inside that face (the box lies a voxel beyond the outermost non-zero
        voxels, so 1.5 reaches between the outermost two). There the body goes on beyond the scan,
        and the DRR ramps or steps where the X-ray does not: at the first and last slices of every CT,
        and at every face of a crop. Rays that enter and leave through the two faces facing the source
        (the front and back of the body in an AP view) are not cut however much tissue those faces
        hold: their line integrals change smoothly from pixel to pixel. Rays that miss the box are not
        cut either (beside a body scanned whole they pass through air); those next to a cut face
        follow cut ones.
        """
        poses = camera_from_world.reshape(-1, 4, 4).to(device=self.volume.device, dtype=self.volume.dtype)
        with torch.no_grad():
            origin, direction = self._rays_normalized(poses)  # (B, 3), (B, P, 3)
            near, entry_axis, far, exit_axis = self._slabs(origin, direction)
            hit = far > near
            # cosine of the ray with each face normal: the normal of normalised axis a is row a of A
            mm_per_unit = self.normalized_from_world[:3, :3].norm(dim=1)  # |A[a]|, normalised units per mm
            cosine = direction.abs() / (mm_per_unit * self.ray_length_mm[:, None])  # (B, P, 3)
            cut = torch.zeros_like(hit)
            for parameter, axis, entering in ((near, entry_axis, True), (far, exit_axis, False)):
                side = cosine.gather(-1, axis[..., None])[..., 0] < side_cosine
                points = origin[:, None, :] + parameter[..., None] * direction  # (B, P, 3) on the face, x = i
                along = direction.gather(-1, axis[..., None])[..., 0]
                inward = torch.where((along > 0) == entering, 1.0, -1.0).to(points) * (inset_voxels / self.half_grid)[axis]
                points = points.scatter_add(-1, axis[..., None], inward[..., None])  # moved into the box along the face's normal
                tissue = F.grid_sample(self.volume[:, :1].expand(len(poses), -1, -1, -1, -1), points[:, :, None, None, :],
                                       mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0, :, 0, 0] > threshold
                cut |= hit & side & tissue
        return cut.reshape(len(poses), self.geometry.rows, self.geometry.cols)

    # ------------------------------------------------------------------ internals

    def _rays_normalized(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source position ``(B, 3)`` and source-to-pixel vectors ``(B, P, 3)`` in normalised grid coordinates."""
        rotation_t = poses[:, :3, :3].transpose(1, 2)
        source_world = -(rotation_t @ poses[:, :3, 3:4])[..., 0]  # (B, 3)
        normalized_linear = self.normalized_from_world[:3, :3]
        origin = source_world @ normalized_linear.T + self.normalized_from_world[:3, 3]
        # A detector point p (camera frame) sits at world R^T (p - t) = R^T p + source.
        direction = self.detector_points @ (normalized_linear @ rotation_t).transpose(1, 2)
        return origin, direction

    def _clip(self, origin: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray-line parameters ``[near, far]`` (0 = source, 1 = pixel) of the support box (slab method).

        Not clamped: ``near < 0`` means the box reaches behind the source, ``far > 1`` beyond
        the detector; ``far <= near`` means the line misses the box.
        """
        near, _, far, _ = self._slabs(origin, direction)
        return near, far

    def _slabs(self, origin: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_clip`'s ``near`` and ``far`` with the normalised axis (0 = i, 1 = j, 2 = k) of the face each lies on."""
        inverse = 1.0 / torch.where(direction == 0, torch.full_like(direction, 1e-12), direction)
        to_low = (self.box_low - origin[:, None, :]) * inverse
        to_high = (self.box_high - origin[:, None, :]) * inverse
        near, entry_axis = torch.minimum(to_low, to_high).max(dim=-1)
        far, exit_axis = torch.maximum(to_low, to_high).min(dim=-1)
        return near, entry_axis, far, exit_axis

    def _sweep(self, origin: torch.Tensor, direction: torch.Tensor, axis: int) -> torch.Tensor:
        """Line integrals ``(b, C, P)`` for poses that share the sweep ``axis``."""
        batch, rays = direction.shape[:2]
        _, (w_axis, h_axis) = _SWEEP[axis]
        along = direction[..., axis]
        along = torch.where(along.abs() < 1e-12, torch.full_like(along, 1e-12), along)  # (b, P)
        span = float(self.plane_high[axis] - self.plane_low[axis])
        if self.n_samples:
            planes = self.n_samples
        else:  # enough planes that every ray's step is at most step_mm, rounded up to a few cached counts
            mm_per_unit = self.ray_length_mm / along.detach().abs()
            needed = span * float(mm_per_unit.max()) / self.step_mm
            if needed > MAX_PLANES:
                raise InputError(
                    f"projector: step_mm={self.step_mm:g} needs {needed:.3g} samples per ray (at most {MAX_PLANES}); "
                    "expected a step near the CT's voxel size (about 0.5-2 mm)"
                )
            planes = _plane_ladder(math.ceil(needed))
        slope = direction[..., [w_axis, h_axis]] / along[..., None]  # (b, P, 2): in-plane change per unit along axis
        intercept = origin[:, None, [w_axis, h_axis]] - origin[:, None, axis, None] * slope  # in-plane point at axis = 0
        sample_mm = self.ray_length_mm * (span / planes) / along.abs()  # (b, P) step between planes along each ray
        # Planes behind the source or beyond the detector must not count. They lie outside the
        # support box (zero samples) unless the box reaches behind the source or past the detector.
        with torch.no_grad():
            near, far = self._clip(origin, direction)
            guard = bool(((near <= 0) | (far >= 1)).logical_and(far > near).any())
            hits = (far.clamp_max(1.0) >= near.clamp_min(0.0)).reshape(-1)  # rays whose segment meets the support box
        per_ray = (
            intercept.reshape(-1, 2),
            slope.reshape(-1, 2),
            origin[:, None, axis].expand(batch, rays).reshape(-1).detach(),
            along.reshape(-1).detach(),
        )
        sampled = None
        if not bool(hits.all()):  # only the rays that meet the box: the others' samples are all zero (a search detector
            # several X-rays wide: half to two thirds of its rays)
            sampled = hits.nonzero()[:, 0]
            per_ray = tuple(values.index_select(0, sampled) for values in per_ray)
        rays_per_chunk = max(1, (self.max_samples_per_chunk or samples_per_chunk(direction.device)) // planes)
        total = None
        for slices, positions in self._plane_chunks(axis, planes) if per_ray[0].shape[0] else ():
            pieces = []
            for chunk_intercept, chunk_slope, origin_axis, chunk_along in zip(*(t.split(rays_per_chunk) for t in per_ray)):
                inside = None
                if guard:  # ray parameter of each plane: (position - origin) / along, keep [0, 1]
                    t = (positions[:, None] - origin_axis[None]) / chunk_along[None]
                    inside = ((t >= 0) & (t <= 1)).to(slices.dtype)
                pieces.append(_PlaneSweep.apply(slices, positions, chunk_intercept, chunk_slope, inside))
            partial = torch.cat(pieces, dim=1)  # (C, b * P)
            total = partial if total is None else total + partial
        if total is None:  # every plane between empty slices, or no ray meets the box
            total = direction.new_zeros(self.volume.shape[1], per_ray[0].shape[0])
        if sampled is not None:
            total = direction.new_zeros(total.shape[0], batch * rays).index_copy(1, sampled, total)
        sums = total.reshape(-1, batch, rays).transpose(0, 1)  # (b, C, P)
        return sums * sample_mm[:, None, :]

    def _plane_chunks(self, axis: int, planes: int):
        """Yield blended slices ``(m, C, H, W)`` and their plane positions ``(m,)``: all ``planes`` in order, less those
        between two empty slices when the volume needs no gradient of its own."""
        dim, _ = _SWEEP[axis]
        data = self.volume[0]  # (C, K, J, I)
        slice_bytes = data.numel() // data.shape[dim] * data.element_size()
        per_chunk = max(1, self.max_cache_bytes // max(slice_bytes, 1))
        low, high = float(self.plane_low[axis]), float(self.plane_high[axis])
        cacheable = not data.requires_grad and planes <= per_chunk
        key = (axis, planes)
        if cacheable and key in self._slice_cache:
            self._slice_cache[key] = self._slice_cache.pop(key)  # the most recently used last
            yield self._slice_cache[key]
            return
        positions = low + (torch.arange(planes, dtype=torch.float64) + 0.5) * (high - low) / planes
        if not data.requires_grad:  # planes between two empty slices add nothing to a DRR or its pose gradient
            positions = positions[self._between_occupied(dim, positions)]
        major = self._slices_major(dim) if not data.requires_grad else None
        for start in range(0, len(positions), per_chunk):
            chunk = positions[start : start + per_chunk]
            result = (_blended_slices(data, dim, chunk, major), chunk.to(data))
            if cacheable:  # keep a few plane sets (pyramid levels share the cache) within the budget
                _evict_least_recent(self._slice_cache, self.max_cache_bytes - result[0].numel() * result[0].element_size())
                self._slice_cache[key] = result
            yield result

    def _slices_major(self, dim: int) -> torch.Tensor | None:
        """The volume's slices across ``dim`` as one contiguous ``(size, C, ...)`` tensor where gathering them from the
        volume itself is slow, else None. Only the innermost dim (I: a sweep along the volume's i axis, the lateral
        rays of a roll beyond 45 deg) needs it: each of its slices is one value in every row, and gathering 512 of a
        512 x 512 x 141 CT's took 0.42 s against 0.06 s from this copy (the blends are the same to the bit). Made once
        per volume (one more copy of it in memory) and shared by the projectors of :meth:`on_detector`."""
        data = self.volume[0]
        if dim != data.ndim - 1 or data.shape[dim] == 1:
            return None
        if not self._innermost_major:
            self._innermost_major.append(data.movedim(dim, 0).contiguous())
        return self._innermost_major[0]

    def _between_occupied(self, dim: int, positions: torch.Tensor) -> torch.Tensor:
        """``(n,)`` bool: whether the plane at each normalised position blends a slice with a non-zero voxel.

        A CT's support box can hold whole empty slabs (the air between the patient and the table, whose
        foam mattress is dropped with the air): their planes sample zeros at full cost. The occupancy of the
        slices is computed once per sweep dimension and shared with the projector's copies."""
        if dim not in self._occupied:  # with an empty slice on each side: the planes beyond the volume
            data = self.volume[0]
            others = tuple(axis for axis in range(data.ndim) if axis != dim)
            empty = torch.zeros(1, dtype=torch.bool)
            self._occupied[dim] = torch.cat([empty, (data != 0).any(dim=others).cpu(), empty])
        padded = self._occupied[dim]
        size = padded.shape[0] - 2
        lower = torch.floor(((positions + 1.0) * size - 1.0) / 2.0).long()  # align_corners=False, as _blended_slices
        return padded[(lower + 1).clamp(0, size + 1)] | padded[(lower + 2).clamp(0, size + 1)]


class _PlaneSweep(torch.autograd.Function):
    """``sum_s bilinear(slices[s], intercept + position_s * slope)`` for ``r`` rays: ``(C, r)``.

    Saves only the per-ray ``(r, 2)`` inputs: the backward recomputes the sample grid,
    calls the 2D sampler's backward once and reduces the grid gradient over the planes
    with one ``(2, n) @ (n, 2 r)`` product.
    """

    @staticmethod
    def forward(ctx, slices, positions, intercept, slope, inside):
        grid = torch.addcmul(intercept[None], positions[:, None, None], slope[None])  # (n, r, 2)
        values = F.grid_sample(slices, grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)[:, :, 0]
        if inside is not None:
            values = values * inside[:, None]
        ctx.save_for_backward(slices, positions, intercept, slope, inside)
        ctx.has_inside = inside is not None
        return values.sum(dim=0)  # (C, r)

    @staticmethod
    def backward(ctx, grad_sums):
        slices, positions, intercept, slope, inside = ctx.saved_tensors
        planes = positions.shape[0]
        grid = torch.addcmul(intercept[None], positions[:, None, None], slope[None])
        grad_values = grad_sums[None].expand(planes, -1, -1)  # (n, C, r)
        if ctx.has_inside:
            grad_values = grad_values * inside[:, None]
        grad_slices, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_values[:, :, None].contiguous(), slices, grid[:, None], 0, 0, False, [ctx.needs_input_grad[0], True]
        )
        coefficients = torch.stack([torch.ones_like(positions), positions])  # (2, n)
        reduced = (coefficients @ grad_grid.reshape(planes, -1)).reshape(2, -1, 2)
        return (grad_slices if ctx.needs_input_grad[0] else None), None, reduced[0], reduced[1], None


def _evict_least_recent(cache: dict, budget_bytes: int) -> None:
    """Drop the least recently used plane sets of ``cache`` (oldest first: :meth:`Projector._plane_chunks` moves
    a set it reuses to the end) until the rest hold at most ``budget_bytes``.

    The plane count follows the pose (the most oblique ray), so a registration that turns the CT uses several sets
    per sweep axis; clearing them all whenever a new one did not fit rebuilt the blends of a full-size CT
    (0.3-1.3 s each) about seventy times in one wide-start registration."""
    sizes = {key: entry[0].numel() * entry[0].element_size() for key, entry in cache.items()}
    total = sum(sizes.values())
    for key in list(cache):
        if total <= budget_bytes:
            break
        total -= sizes[key]
        del cache[key]


def samples_per_chunk(device: torch.device) -> int:
    """Samples one render's ``grid_sample`` call reads by default on ``device`` (see :data:`CPU_SAMPLES_PER_THREAD`)."""
    if device.type != "cpu":
        return MAX_SAMPLES_PER_CHUNK
    return min(MAX_SAMPLES_PER_CHUNK, CPU_SAMPLES_PER_THREAD * torch.get_num_threads())


def _check_step(step_mm: float) -> None:
    if not MIN_STEP_MM <= step_mm < math.inf:
        raise InputError(f"projector: step_mm must be a finite number >= {MIN_STEP_MM} mm, got {step_mm!r}")


def _check_detector(geometry: CArmGeometry) -> None:
    """:class:`InputError` where the detector's per-pixel buffers would not fit in memory."""
    check_allocation(geometry.rows * geometry.cols * _BYTES_PER_PIXEL, f"projector: a {geometry.rows}x{geometry.cols} detector")


def _plane_ladder(needed: int) -> int:
    """The smallest count ``round(8 * 2 ** (k / 8)) >= needed`` (steps of about 9 %).

    The count needed depends on the pose; rounding it up to this ladder lets nearby
    poses share cached blended slices (and only makes the steps smaller).
    """
    if needed <= 8:
        return max(1, needed)
    return round(8 * 2 ** (math.ceil(8 * math.log2(needed / 8) - 1e-9) / 8))


def _blended_slices(data: torch.Tensor, dim: int, positions: torch.Tensor, major: torch.Tensor | None = None) -> torch.Tensor:
    """Trilinear blends ``(n, C, H, W)`` of ``data`` (C, K, J, I) at normalised ``positions`` along ``dim``; ``major``:
    the same slices as ``data.movedim(dim, 0)``, stored contiguously (:meth:`Projector._slices_major`)."""
    size = data.shape[dim]
    index = ((positions + 1.0) * size - 1.0) / 2.0  # align_corners=False
    lower = torch.floor(index)
    fraction = (index - lower).to(data)[:, None, None, None]
    # a view: copying the volume (as padding it did) took longer than the blend, except across its innermost dim
    slices = data.movedim(dim, 0) if major is None else major

    def gathered(which: torch.Tensor) -> torch.Tensor:  # the slices at ``which``, zero beyond the volume
        picked = slices.index_select(0, which.clamp(0, size - 1))
        outside = (which < 0) | (which >= size)
        if bool(outside.any()):
            picked[outside] = 0.0
        return picked

    lower = lower.long().to(data.device)
    low, high = gathered(lower), gathered(lower + 1)
    if data.requires_grad:
        return torch.lerp(low, high, fraction.to(data.device)).contiguous()
    return torch.lerp(low, high, fraction.to(data.device), out=low)  # in place: a set of a full-size CT is hundreds of MB


def support_box_fraction(inner: torch.Tensor, outer: torch.Tensor) -> float:
    """The volume of the support box of ``inner``'s voxels over that of ``outer``'s (``(K, J, I)`` tensors on one
    grid; 0 where ``inner`` is empty): about the share of a render of ``outer`` that a render of ``inner`` on
    ``outer``'s planes (``planes_like``) samples."""
    inner_low, inner_high = _support_box_index(inner[None])
    outer_low, outer_high = _support_box_index(outer[None])
    outer_size = float((outer_high - outer_low).prod())
    return float((inner_high - inner_low).clamp_min(0.0).prod()) / outer_size if outer_size > 0 else 0.0


def _support_box_index(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index-space box ``[low, high]`` (I, J, K order) outside which the interpolant is zero."""
    occupied = (data[0] != 0) if data.shape[0] == 1 else (data != 0).any(dim=0)  # (K, J, I)
    rows = occupied.any(dim=2)  # (K, J): two passes over the voxels instead of three (0.1 s each on a chest CT)
    if not rows.any():  # nothing to integrate: an empty box
        return torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    lows, highs = [], []
    for present in (occupied.any(dim=0).any(dim=0), rows.any(dim=0), rows.any(dim=1)):  # i, j, k
        index = torch.nonzero(present).flatten()
        lows.append(float(index.min()) - 1.0)
        highs.append(float(index.max()) + 1.0)
    return torch.tensor(lows, dtype=torch.float64), torch.tensor(highs, dtype=torch.float64)


def _detector_points_camera(geometry: CArmGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres ``(rows * cols, 3)`` in the camera frame (row-major) and their distance to the source (mm)."""
    du, dv = geometry.pixel_spacing_mm
    cu, cv = geometry.principal_point_px
    rows = torch.arange(geometry.rows, dtype=torch.float64)
    cols = torch.arange(geometry.cols, dtype=torch.float64)
    row_grid, col_grid = torch.meshgrid(rows, cols, indexing="ij")
    points = torch.stack(
        [(col_grid - cu) * du, (row_grid - cv) * dv, torch.full_like(col_grid, geometry.sdd_mm)], dim=-1
    ).reshape(-1, 3)
    return points, points.norm(dim=-1)
