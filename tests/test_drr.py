"""The projector against analytic path lengths, exact bead projection, finite differences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sopi.drr import Projector
from sopi.errors import InputError
from sopi.geometry import CArmGeometry, nominal_view, project_points, rigid
from sopi.volume import Volume

GEOMETRY = CArmGeometry(1000.0, 48, 40, (2.5, 2.2), principal_point_px=(20.3, 23.1), source_to_isocenter_mm=650.0)


def oblique_affine(shape_ijk, spacing, origin, angles_rad=(0.3, -0.2, 0.5)) -> torch.Tensor:
    """A world_from_index with rotated direction cosines and anisotropic spacing."""
    from sopi.geometry import rotation_from_euler

    direction = rotation_from_euler(torch.tensor(angles_rad, dtype=torch.float64))
    return rigid(direction, torch.tensor(origin, dtype=torch.float64)) @ torch.diag(
        torch.tensor([*spacing, 1.0], dtype=torch.float64)
    )


def random_views(center: torch.Tensor, count: int, seed: int, spread_deg: float = 25.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    poses = []
    for index in range(count):
        view = nominal_view("ap" if index % 2 else "lateral", center, 650.0)
        theta = torch.randn(6, generator=generator, dtype=torch.float64) * torch.tensor([spread_deg] * 3 + [8.0] * 3, dtype=torch.float64)
        poses.append(view.pose(theta))
    return torch.stack(poses)


def world_rays(pose: torch.Tensor, geometry: CArmGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent float64 rays of one pose: the source (3,) and every pixel's source-to-pixel vector
    ``(rows, cols, 3)``, in world mm."""
    du, dv = geometry.pixel_spacing_mm
    cu, cv = geometry.principal_point_px
    rows, cols = torch.meshgrid(torch.arange(geometry.rows, dtype=torch.float64), torch.arange(geometry.cols, dtype=torch.float64), indexing="ij")
    pixel_camera = torch.stack([(cols - cu) * du, (rows - cv) * dv, torch.full_like(cols, geometry.sdd_mm)], -1)
    rotation, translation = pose[:3, :3], pose[:3, 3]
    source = -rotation.T @ translation
    return source, (pixel_camera - translation) @ rotation - source  # R^T (p - t) - source


def ray_box_chords(poses: torch.Tensor, geometry: CArmGeometry, box_low_world, box_high_world, ramp_mm):
    """Independent float64 chord lengths of every pixel's ray through an axis-aligned world box.

    Also says which rays are "clean": the interpolant of a box of ones ramps linearly
    across each face over ``+-ramp_mm / 2`` (per axis), which integrates exactly for a
    ray crossing a face but not where the ramps of two faces meet (near edges). A ray
    is clean if it enters and leaves the boxes grown and shrunk by the ramp through the
    same faces as the box itself, away from those faces' edges.
    """
    low_corner, high_corner = torch.tensor(box_low_world, dtype=torch.float64), torch.tensor(box_high_world, dtype=torch.float64)
    half_ramp = torch.tensor(ramp_mm, dtype=torch.float64) / 2
    chords, clean = [], []
    for pose in poses:
        source, direction = world_rays(pose, geometry)
        ok = torch.ones(direction.shape[:-1], dtype=torch.bool)
        faces = None
        for grow in (1.0, 0.0, -1.0):
            low_box, high_box = low_corner - grow * half_ramp, high_corner + grow * half_ramp
            to_low, to_high = (low_box - source) / direction, (high_box - source) / direction
            entering, leaving = torch.minimum(to_low, to_high), torch.maximum(to_low, to_high)
            near, far = entering.amax(-1), leaving.amin(-1)
            if grow == 0.0:
                chords.append((far - near).clamp(min=0) * direction.norm(dim=-1))
            ok &= far > near
            these_faces = torch.stack([entering.argmax(-1), leaving.argmin(-1)])
            ok &= True if faces is None else (these_faces == faces).all(0)
            faces = these_faces
            for lam in (near, far):
                point = source + lam[..., None] * direction
                close = ((point - low_box).abs() < half_ramp) | ((high_box - point).abs() < half_ramp)
                ok &= close.sum(-1) == 1
        clean.append(ok)
    return torch.stack(chords), torch.stack(clean)


def test_uniform_box_path_lengths_within_one_percent():
    """Axis-aligned box of ones: the DRR is the chord length of each ray through the box."""
    shape_kji = (30, 36, 40)
    spacing = (2.0, 1.5, 2.5)  # i, j, k
    origin = (-40.0, -27.0, -37.5)
    world_from_index = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    world_from_index[:3, 3] = torch.tensor(origin, dtype=torch.float64)
    volume = Volume(torch.ones(shape_kji), world_from_index)
    # The interpolant of n voxels of ones integrates to n voxel lengths: the box spans the voxel edges.
    low = [o - s / 2 for o, s in zip(origin, spacing)]
    high = [o + (n - 0.5) * s for o, s, n in zip(origin, spacing, reversed(shape_kji))]
    poses = random_views(volume.center_world, 6, seed=0)
    images = Projector(volume, GEOMETRY, step_mm=0.25)(poses).double()
    # The interpolant ramps linearly over one voxel at each face, which integrates exactly
    # for a ray crossing a face, but not for one passing within a voxel of an edge.
    expected, clean = ray_box_chords(poses, GEOMETRY, low, high, ramp_mm=spacing)
    inside = (expected > 20.0) & clean
    assert inside.sum() > 1000
    relative = (images[inside] - expected[inside]).abs() / expected[inside]
    assert relative.max() < 0.01


def test_ball_path_lengths_within_one_percent():
    radius, spacing, size = 30.0, 1.25, 64
    index = torch.arange(size, dtype=torch.float64)
    centre = (size - 1) / 2
    # partial-volume ball by 3x3x3 supersampling
    offsets = (torch.arange(3, dtype=torch.float64) - 1) / 3
    occupancy = torch.zeros(size, size, size, dtype=torch.float64)
    for dk in offsets:
        for dj in offsets:
            for di in offsets:
                k, j, i = torch.meshgrid(index + dk, index + dj, index + di, indexing="ij")
                occupancy += ((((i - centre) ** 2 + (j - centre) ** 2 + (k - centre) ** 2).sqrt() * spacing) <= radius).double()
    world_from_index = oblique_affine((size,) * 3, (spacing,) * 3, (5.0, -3.0, 12.0))
    volume = Volume((occupancy / 27).float(), world_from_index)
    poses = random_views(volume.center_world, 4, seed=1, spread_deg=40.0)
    images = Projector(volume, GEOMETRY, step_mm=0.5)(poses).double()
    # analytic: chord = 2 sqrt(r^2 - d^2), d the distance from the ball centre to the ray
    du, dv = GEOMETRY.pixel_spacing_mm
    cu, cv = GEOMETRY.principal_point_px
    rows, cols = torch.meshgrid(torch.arange(GEOMETRY.rows, dtype=torch.float64), torch.arange(GEOMETRY.cols, dtype=torch.float64), indexing="ij")
    rays = torch.stack([(cols - cu) * du, (rows - cv) * dv, torch.full_like(cols, GEOMETRY.sdd_mm)], -1)
    rays = rays / rays.norm(dim=-1, keepdim=True)
    for pose, image in zip(poses, images):
        centre_camera = pose[:3, :3] @ volume.center_world + pose[:3, 3]
        along = rays @ centre_camera
        distance_sq = centre_camera.square().sum() - along.square()
        chord = 2 * (radius**2 - distance_sq).clamp(min=0).sqrt()
        core = distance_sq < (0.7 * radius) ** 2  # the voxelised ball's rim is blurred by one voxel
        assert core.sum() > 50
        assert ((image[core] - chord[core]).abs() / chord[core]).max() < 0.01


def test_bead_projects_where_the_pinhole_model_says():
    """A small Gaussian bead's image centroid sits at K (R X + t) within 0.5 px, for many poses."""
    shape = (40, 44, 48)  # k, j, i
    world_from_index = oblique_affine(shape, (1.1, 0.9, 1.3), (-20.0, 15.0, 40.0))
    volume_probe = Volume(torch.zeros(shape), world_from_index)
    generator = torch.Generator().manual_seed(5)
    geometry = CArmGeometry(1000.0, 96, 96, (0.6, 0.6), source_to_isocenter_mm=650.0)
    for trial in range(4):
        bead_index = torch.tensor([14.0, 16.0, 12.0], dtype=torch.float64) + torch.rand(3, generator=generator, dtype=torch.float64) * 16
        k, j, i = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij")
        distance_sq = (i - bead_index[0]) ** 2 + (j - bead_index[1]) ** 2 + (k - bead_index[2]) ** 2
        volume = volume_probe.with_data(torch.exp(-distance_sq / (2 * 0.8**2)).float())
        bead_world = (world_from_index @ torch.cat([bead_index, torch.ones(1, dtype=torch.float64)]))[:3]
        poses = random_views(bead_world, 8, seed=10 + trial, spread_deg=60.0)
        images = Projector(volume, geometry, step_mm=0.2)(poses).double()
        expected = project_points(poses, geometry, bead_world[None].expand(8, 1, 3))[:, 0]
        rows, cols = torch.meshgrid(torch.arange(96.0, dtype=torch.float64), torch.arange(96.0, dtype=torch.float64), indexing="ij")
        weights = images / images.sum(dim=(1, 2), keepdim=True)
        centroid = torch.stack([(weights * cols).sum((1, 2)), (weights * rows).sum((1, 2))], -1)
        in_view = ((expected > 8) & (expected < 88)).all(dim=-1)  # the whole blob on the detector
        assert in_view.sum() >= 5
        assert (centroid - expected)[in_view].norm(dim=-1).max() < 0.5


def smooth_volume(seed: int = 0) -> Volume:
    generator = torch.Generator().manual_seed(seed)
    shape = (24, 26, 28)
    k, j, i = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij")
    data = torch.zeros(shape, dtype=torch.float64)
    for _ in range(6):
        centre = torch.rand(3, generator=generator, dtype=torch.float64) * 14 + 6
        data += torch.exp(-((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2) / (2 * 2.5**2))
    return Volume(data, oblique_affine(shape, (2.0, 2.0, 2.0), (-25.0, -20.0, -30.0)))


def test_pose_gradients_match_finite_differences():
    volume = smooth_volume()
    geometry = CArmGeometry(1000.0, 20, 24, (3.0, 3.0), source_to_isocenter_mm=650.0)
    projector = Projector(volume, geometry, n_samples=96, dtype=torch.float64)
    nominal = nominal_view("ap", volume.center_world, 650.0)
    weights = torch.randn(geometry.rows, geometry.cols, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(theta):
        return (projector(nominal.pose(theta)) * weights).sum()

    theta = torch.tensor([3.0, -2.0, 4.0, 2.0, -1.5, 5.0], dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(loss(theta), theta)
    numeric = torch.zeros(6, dtype=torch.float64)
    for index in range(6):
        step = torch.zeros(6, dtype=torch.float64)
        step[index] = 1e-4
        numeric[index] = (loss(theta.detach() + step) - loss(theta.detach() - step)) / 2e-4
    assert torch.allclose(gradient, numeric, rtol=2e-3, atol=1e-3 * numeric.abs().max())


def test_volume_gradient_matches_finite_differences():
    volume = smooth_volume(1)
    geometry = CArmGeometry(1000.0, 8, 8, (6.0, 6.0), source_to_isocenter_mm=650.0)
    pose = nominal_view("lateral", volume.center_world, 650.0).camera_from_world
    data = volume.data.clone().requires_grad_(True)
    projector = Projector(volume, geometry, n_samples=64, dtype=torch.float64)
    projector.volume = data[None, None]
    image = projector(pose)
    (gradient,) = torch.autograd.grad(image.sum(), data)
    # The image is linear in the volume: the gradient is the sampling weight of each voxel.
    voxel = tuple(int(v) for v in (torch.tensor(volume.data.shape) // 2))
    bumped = volume.data.clone()
    bumped[voxel] += 1.0
    difference = Projector(volume.with_data(bumped), geometry, n_samples=64, dtype=torch.float64)(pose).sum() - image.sum()
    assert float(gradient[voxel]) == pytest.approx(float(difference.detach()), rel=1e-9, abs=1e-12)
    assert float(gradient[voxel]) > 0


def test_batched_equals_one_by_one_and_chunking_is_invisible():
    volume = smooth_volume(2).to(torch.float32)
    poses = random_views(volume.center_world, 5, seed=3)
    projector = Projector(volume, GEOMETRY, step_mm=1.0, n_samples=80)
    batched = projector(poses)
    single = torch.stack([projector(pose) for pose in poses])
    # float32 sums in another order: batched and single kernels differ by 1e-5 relative on some CPUs (Intel Xeon)
    assert torch.allclose(batched, single, rtol=1e-4, atol=1e-5)
    chunked = Projector(volume, GEOMETRY, n_samples=80, max_samples_per_chunk=80 * 37)(poses)
    assert torch.allclose(batched, chunked, atol=1e-5)


def test_chunked_rays_and_planes_give_the_same_values_and_gradients():
    """Small ray chunks and blended slices built plane-chunk by plane-chunk change nothing."""
    volume = smooth_volume(3)
    theta = torch.tensor([1.0, 2.0, -1.0, 0.5, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    nominal = nominal_view("ap", volume.center_world, 650.0)
    plain = Projector(volume, GEOMETRY, n_samples=40, dtype=torch.float64)
    slice_bytes = 26 * 28 * 8  # one (J, I) slice of float64
    chunked = Projector(volume, GEOMETRY, n_samples=40, dtype=torch.float64, max_samples_per_chunk=4000, max_cache_bytes=7 * slice_bytes)
    image_plain, image_chunked = plain(nominal.pose(theta)), chunked(nominal.pose(theta))
    assert torch.allclose(image_plain, image_chunked, rtol=1e-12, atol=1e-12)
    (g_plain,) = torch.autograd.grad(image_plain.square().sum(), theta)
    (g_chunked,) = torch.autograd.grad(image_chunked.square().sum(), theta)
    assert torch.allclose(g_plain, g_chunked, rtol=1e-9)


def test_planes_between_empty_slices_are_skipped_and_change_no_value_or_gradient(monkeypatch):
    """A volume with an empty slab across every axis (the air between a patient and the table): the planes
    there are not sampled, and the DRRs and their pose gradients equal those of a render that samples every
    plane (a volume that requires its gradient skips nothing)."""
    import sopi.drr as drr

    volume = smooth_volume(5)
    data = volume.data.clone()
    data[8:15] = 0.0
    data[:, 9:16] = 0.0
    data[:, :, 10:17] = 0.0
    sampled = []
    blend = drr._blended_slices
    monkeypatch.setattr(drr, "_blended_slices", lambda d, dim, positions, *rest: sampled.append(len(positions)) or blend(d, dim, positions, *rest))
    theta = torch.tensor([4.0, -3.0, 2.0, 1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    for view in ("ap", "lateral"):
        nominal = nominal_view(view, volume.center_world, 650.0)
        sampled.clear()
        skipping = Projector(volume.with_data(data), GEOMETRY, n_samples=60, dtype=torch.float64)
        image = skipping(nominal.pose(theta))
        assert sum(sampled) < 60  # the slab's planes were left out
        sampled.clear()
        every = Projector(volume.with_data(data.clone().requires_grad_()), GEOMETRY, n_samples=60, dtype=torch.float64)
        reference = every(nominal.pose(theta))
        assert sum(sampled) == 60
        assert float(image.detach().abs().max()) > 1.0
        assert torch.allclose(image, reference, rtol=1e-12, atol=1e-12)
        (gradient,) = torch.autograd.grad(image.square().sum(), theta)
        (expected,) = torch.autograd.grad(reference.square().sum(), theta)
        assert torch.allclose(gradient, expected, rtol=1e-9, atol=1e-9)


def test_channels_render_like_separate_volumes_and_masks_give_path_lengths():
    volume = smooth_volume(4).to(torch.float32)
    mask = (volume.data > 0.5).float()
    poses = random_views(volume.center_world, 3, seed=4)
    both = Projector(volume.with_data(torch.stack([volume.data, mask])), GEOMETRY, n_samples=60)(poses)
    assert both.shape == (3, 2, GEOMETRY.rows, GEOMETRY.cols)
    # the first channel sets the support box, so it renders exactly as alone
    assert torch.allclose(both[:, 0], Projector(volume, GEOMETRY, n_samples=60)(poses), atol=1e-5)
    # a mask alone has a tighter box (other sample positions): equal up to discretisation
    alone = Projector(volume.with_data(mask), GEOMETRY, step_mm=0.1)(poses)
    fine = Projector(volume.with_data(torch.stack([volume.data, mask])), GEOMETRY, step_mm=0.1)(poses)[:, 1]
    assert (alone - fine).abs().max() < 0.02 * alone.max()
    assert (both[:, 1] - fine).abs().max() < 0.05 * alone.max()


def test_a_mask_on_its_ct_planes_renders_as_the_two_channel_render_does_and_skips_what_adds_nothing(monkeypatch):
    """``planes_like``: a mask whose support box is a small part of its CT's renders with the CT's sample planes, so
    its projection equals the mask channel of a two-channel render (the same samples; planes between its empty
    slices and rays that miss its box only add zeros), where it differs with its own planes; it samples far fewer
    planes and rays than the CT. A volume on another grid is refused."""
    import sopi.drr as drr

    volume = smooth_volume(7).to(torch.float32)
    mask = torch.zeros_like(volume.data)
    mask[9:15, 10:16, 11:18] = 1.0
    poses = random_views(volume.center_world, 4, seed=8)
    ct = Projector(volume, GEOMETRY, step_mm=1.3)
    expected = Projector(volume.with_data(torch.stack([volume.data, mask])), GEOMETRY, step_mm=1.3)(poses)
    sampled = []
    sweep = drr._PlaneSweep.apply
    monkeypatch.setattr(drr._PlaneSweep, "apply", lambda slices, positions, intercept, *rest: sampled.append(len(positions) * len(intercept)) or sweep(slices, positions, intercept, *rest))
    projected = Projector(volume.with_data(mask), GEOMETRY, step_mm=1.3, planes_like=ct)(poses)
    mask_samples = sum(sampled)
    sampled.clear()
    assert torch.allclose(ct(poses), expected[:, 0], rtol=1e-6, atol=1e-6)
    ct_samples = sum(sampled)
    assert float(projected.max()) > 1.0
    assert torch.allclose(projected, expected[:, 1], rtol=1e-5, atol=1e-5)
    assert torch.equal(projected > 0, expected[:, 1] > 0)
    assert mask_samples < 0.25 * ct_samples
    own = Projector(volume.with_data(mask), GEOMETRY, step_mm=1.3)(poses)  # its own box: other planes
    assert not torch.allclose(own, expected[:, 1], rtol=1e-3, atol=1e-3)
    coarse = Volume(mask[::2, ::2, ::2].contiguous(), volume.world_from_index @ torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64)))
    with pytest.raises(InputError, match="planes_like"):
        Projector(coarse, GEOMETRY, planes_like=ct)


def test_rays_that_miss_the_support_box_are_not_sampled_and_change_no_value_or_gradient(monkeypatch):
    """On a detector wider than the volume's projection (the global search's), only the rays that meet the support
    box are sampled; DRRs (CT and mask channels) and pose gradients equal a render that samples every ray, and a
    detector that misses the volume renders zeros."""
    import copy

    import sopi.drr as drr

    volume = smooth_volume(3)
    data = volume.data.clone()
    data[:, :, :8] = 0.0
    data[:, :6] = 0.0
    mask = torch.zeros_like(data)
    mask[10:16, 11:17, 12:20] = 1.0
    wide = CArmGeometry(1000.0, 40, 44, (4.0, 4.0), source_to_isocenter_mm=650.0)
    theta = torch.tensor([6.0, -4.0, 3.0, 5.0, -3.0, 8.0], dtype=torch.float64, requires_grad=True)
    counted = []
    sweep = drr._PlaneSweep.apply
    monkeypatch.setattr(drr._PlaneSweep, "apply", lambda slices, positions, intercept, *rest: counted.append(intercept.shape[0]) or sweep(slices, positions, intercept, *rest))

    def every_ray(projector: Projector) -> Projector:  # _clip's box grown: every ray meets it, the planes stay
        other = copy.copy(projector)
        slabs = projector._slabs
        other._clip = lambda origin, direction: tuple(value - 10.0 * sign for value, sign in zip(slabs(origin, direction)[::2], (1.0, -1.0)))
        return other

    for view in ("ap", "lateral"):
        nominal = nominal_view(view, volume.center_world, 650.0)
        projector = Projector(volume.with_data(torch.stack([data, mask])), wide, n_samples=50, dtype=torch.float64)
        counted.clear()
        image = projector(nominal.pose(theta))
        hit_rays = sum(counted)
        counted.clear()
        reference = every_ray(projector)(nominal.pose(theta))
        assert hit_rays < sum(counted) == wide.rows * wide.cols
        assert float(image[1].detach().max()) > 1.0 and int((image[0] == 0).sum()) > 0  # one pose: (channels, rows, cols)
        assert torch.allclose(image, reference, rtol=1e-12, atol=1e-12)
        (gradient,) = torch.autograd.grad(image.square().sum(), theta)
        (expected,) = torch.autograd.grad(reference.square().sum(), theta)
        assert torch.allclose(gradient, expected, rtol=1e-12, atol=1e-12)
    away = nominal_view("ap", volume.center_world + torch.tensor([400.0, 0.0, 0.0], dtype=torch.float64), 650.0)
    counted.clear()
    assert torch.equal(projector(away.camera_from_world), torch.zeros(2, wide.rows, wide.cols, dtype=torch.float64))
    assert not counted


def test_resized_projector_equals_a_projector_built_for_that_detector():
    volume = smooth_volume(5).to(torch.float32)
    pose = random_views(volume.center_world, 1, seed=6)
    projector = Projector(volume, GEOMETRY, n_samples=50)
    small = projector.resized(24, 20)
    direct = Projector(volume, GEOMETRY.resized(24, 20), n_samples=50)
    assert torch.allclose(small(pose), direct(pose), atol=1e-5)
    assert projector(pose).shape == (1, GEOMETRY.rows, GEOMETRY.cols)  # the original is untouched


def test_a_projector_on_another_detector_and_step_renders_what_a_new_one_renders():
    """``on_detector`` (the pyramid's levels share one volume and its blended slices) against projectors built
    from scratch, bitwise, in both orders of use; the first projector keeps its own detector and step."""
    volume = smooth_volume(5).to(torch.float32)
    poses = random_views(volume.center_world, 3, seed=7)
    first = Projector(volume, GEOMETRY, step_mm=2.0)
    before = first(poses)
    coarse = first.on_detector(GEOMETRY.resized(24, 20), step_mm=3.0)
    assert torch.equal(coarse(poses), Projector(volume, GEOMETRY.resized(24, 20), step_mm=3.0)(poses))
    assert torch.equal(first(poses), before) and first.step_mm == 2.0 and first.geometry == GEOMETRY
    with pytest.raises(InputError, match="step_mm"):
        first.on_detector(GEOMETRY, step_mm=0.0)


def test_rays_missing_the_volume_are_zero_and_bad_input_is_rejected():
    volume = smooth_volume(6).to(torch.float32)
    far_away = nominal_view("ap", volume.center_world + torch.tensor([500.0, 0, 0], dtype=torch.float64), 650.0)
    image = Projector(volume, GEOMETRY)(far_away.camera_from_world)
    assert image.abs().max() == 0
    with pytest.raises(InputError, match="NaN"):
        Projector(volume.with_data(torch.full((4, 4, 4), math.nan)), GEOMETRY)
    with pytest.raises(InputError, match="poses"):
        Projector(volume, GEOMETRY)(torch.eye(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    volume = smooth_volume(7).to(torch.float32)
    poses = random_views(volume.center_world, 4, seed=7)
    cpu = Projector(volume, GEOMETRY, n_samples=64)(poses)
    gpu = Projector(volume, GEOMETRY, n_samples=64).cuda()(poses.cuda())
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4, rtol=1e-4)


def test_nearby_poses_reuse_the_cached_slices():
    volume = smooth_volume(8).to(torch.float32)
    nominal = nominal_view("ap", volume.center_world, 650.0)
    projector = Projector(volume, GEOMETRY, step_mm=1.0)
    with torch.no_grad():
        for offset in (0.0, 0.3, -0.4, 0.2):
            projector(nominal.pose(torch.tensor([offset, -offset, offset, 1.0, 0.0, offset], dtype=torch.float64)))
    assert len(projector._slice_cache) == 1
    (planes,) = [key[1] for key in projector._slice_cache]
    assert planes >= 1


def test_the_slice_cache_drops_the_least_recently_used_set_first():
    """With room for two plane sets, the set used again stays when a third is built (the oldest goes), and
    renders from the cache equal a fresh projector's."""
    volume = smooth_volume(8).to(torch.float32)
    projector = Projector(volume, GEOMETRY, n_samples=10)
    pose = nominal_view("ap", volume.center_world, 650.0).pose(torch.zeros(6, dtype=torch.float64))
    with torch.no_grad():
        projector(pose)
    ((axis, _), (slices, _)) = next(iter(projector._slice_cache.items()))
    plane_bytes = slices[0].numel() * slices.element_size()
    small = Projector(volume, GEOMETRY, n_samples=10, max_cache_bytes=24 * plane_bytes)  # 10 and 11 planes fit, not 10, 11 and 12
    with torch.no_grad():
        for planes in (10, 11, 10, 12):  # 10 is used again before 12 is built: 11 is the least recent
            small.n_samples = planes
            image = small(pose)
            fresh = Projector(volume, GEOMETRY, n_samples=planes)(pose)
            assert torch.equal(image, fresh)
    assert [key[1] for key in small._slice_cache] == [10, 12]
    assert all(key[0] == axis for key in small._slice_cache)


def test_blended_slices_interpolate_linearly_between_neighbouring_slices_and_are_zero_beyond():
    """The blend the projector caches, against its definition: at a normalised position along an axis (index
    ``((p + 1) * size - 1) / 2``, align_corners=False), the linear mix of the two neighbouring slices, zero
    beyond the volume; positions reach one slice past each end, as the support box allows."""
    from sopi.drr import _blended_slices

    data = torch.randn(2, 5, 6, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for dim in (1, 2, 3):
        size = data.shape[dim]
        reach = 1.0 + 1.0 / size
        positions = torch.linspace(-reach, reach, 23, dtype=torch.float64)
        blended = _blended_slices(data, dim, positions)
        slices = data.movedim(dim, 0)
        for position, result in zip(positions.tolist(), blended):
            index = ((position + 1.0) * size - 1.0) / 2.0
            lower = math.floor(index)
            neighbour = [slices[k] if 0 <= k < size else torch.zeros_like(slices[0]) for k in (lower, lower + 1)]
            expected = neighbour[0] * (1.0 - (index - lower)) + neighbour[1] * (index - lower)
            torch.testing.assert_close(result, expected, rtol=0, atol=1e-12)
        # from a contiguous copy of the slices (Projector._slices_major), the same blends to the bit
        assert torch.equal(_blended_slices(data, dim, positions, slices.contiguous()), blended)


def test_a_sweep_across_the_innermost_axis_blends_from_one_contiguous_copy(monkeypatch):
    """Rays along the volume's i axis (a lateral view) sweep its innermost dim: the projector blends those slices
    from one contiguous copy of the volume, made once and shared with its other detectors, and renders what it
    renders without the copy, to the bit; a view along another axis makes none."""
    volume = smooth_volume(8).to(torch.float32)
    theta = torch.tensor([3.0, -2.0, 1.0, 2.0, -1.0, 1.5], dtype=torch.float64)
    ap, lateral = (nominal_view(view, volume.center_world, 650.0).pose(theta) for view in ("ap", "lateral"))
    projector = Projector(volume, GEOMETRY, step_mm=1.0)
    small = projector.resized(24, 20)
    with torch.no_grad():
        projector(ap)
        assert projector._innermost_major == []
        images = [projector(lateral), small(lateral)]
    assert len(projector._innermost_major) == 1 and small._innermost_major is projector._innermost_major
    assert projector._innermost_major[0].shape == volume.data.movedim(-1, 0)[:, None].shape  # (I, C, K, J)
    monkeypatch.setattr(Projector, "_slices_major", lambda self, dim: None)
    with torch.no_grad():
        strided = [Projector(volume, GEOMETRY, step_mm=1.0)(lateral), Projector(volume, GEOMETRY, step_mm=1.0).resized(24, 20)(lateral)]
    assert all(torch.equal(image, reference) for image, reference in zip(images, strided))
    assert float(images[0].abs().max()) > 1.0


def test_all_finite_finds_nan_and_infinities_anywhere():
    from sopi.validate import all_finite

    values = torch.randn(3, 4, 5)
    assert all_finite(values) and all_finite(torch.empty(0)) and all_finite(torch.arange(5))
    for bad in (float("nan"), float("inf"), -float("inf")):
        spoiled = values.clone()
        spoiled[2, 1, 3] = bad
        assert not all_finite(spoiled)
    with pytest.raises(InputError, match="NaN or infinite"):
        Projector(Volume(torch.where(torch.arange(64.0).reshape(4, 4, 4) == 5, float("nan"), 1.0), torch.eye(4, dtype=torch.float64)), GEOMETRY)


def _face_axes(poses: torch.Tensor, geometry: CArmGeometry, low_world, high_world) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Independent float64 slab test of every pixel's ray against an axis-aligned world box:
    ``(hit, entry axis, exit axis)``, each ``(B, rows, cols)``."""
    low, high = torch.tensor(low_world, dtype=torch.float64), torch.tensor(high_world, dtype=torch.float64)
    hits, entries, exits = [], [], []
    for pose in poses:
        source, direction = world_rays(pose, geometry)
        to_low, to_high = (low - source) / direction, (high - source) / direction
        near, entry = torch.minimum(to_low, to_high).max(-1)
        far, exit_ = torch.maximum(to_low, to_high).min(-1)
        hits.append(far > near)
        entries.append(entry)
        exits.append(exit_)
    return torch.stack(hits), torch.stack(entries), torch.stack(exits)


def test_rays_the_volumes_extent_cuts_leave_through_a_side_face_at_tissue():
    """A block of tissue filling its grid (a crop: the body goes on beyond every face), near-AP views: a ray is
    cut exactly where it enters or leaves the support box through a face other than the two facing the source
    (an independent slab test says which). A ball of tissue in air touches its box at six points only: no ray
    through it is cut."""
    shape_kji, spacing, origin = (30, 36, 40), (2.0, 1.5, 2.5), (-40.0, -27.0, -37.5)
    world_from_index = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    world_from_index[:3, 3] = torch.tensor(origin, dtype=torch.float64)
    block = Volume(torch.full(shape_kji, 0.02), world_from_index)
    # the support box lies one voxel beyond the outermost non-zero voxels: index -1 and n
    low = [o - s for o, s in zip(origin, spacing)]
    high = [o + n * s for o, s, n in zip(origin, spacing, reversed(shape_kji))]
    generator = torch.Generator().manual_seed(3)
    poses = torch.stack([
        nominal_view("ap", block.center_world, 650.0).pose(torch.randn(6, generator=generator, dtype=torch.float64) * torch.tensor([8.0] * 3 + [6.0] * 3))
        for _ in range(4)
    ])
    cut = Projector(block, GEOMETRY).truncated_rays(poses, threshold=0.002)
    hit, entry, exit_ = _face_axes(poses, GEOMETRY, low, high)
    facing = (poses[:, 2, :3].abs().argmax(-1))[:, None, None]  # the world axis along each view's principal ray
    expected = hit & ((entry != facing) | (exit_ != facing))
    # where the expectation changes from pixel to pixel, a sample point can fall either side: judge the rest
    padded = F.pad(expected[:, None].float(), (1, 1, 1, 1), mode="replicate")
    steady = (F.max_pool2d(padded, 3, stride=1) == F.max_pool2d(-padded, 3, stride=1).neg())[:, 0]
    assert int((expected & steady).sum()) > 100 and int((~expected & hit & steady).sum()) > 200
    assert torch.equal(cut[steady], expected[steady])

    size, radius = 40, 18.0
    k, j, i = torch.meshgrid(*(torch.arange(size, dtype=torch.float64),) * 3, indexing="ij")
    ball = ((i - 19.5).square() + (j - 19.5).square() + (k - 19.5).square()).sqrt() * 1.0 <= radius
    ball_volume = Volume(ball.float() * 0.02, oblique_affine((size,) * 3, (1.0,) * 3, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    views = torch.stack([nominal_view("ap", ball_volume.center_world, 650.0).pose(torch.zeros(6, dtype=torch.float64)),
                         nominal_view("lateral", ball_volume.center_world, 650.0).pose(torch.zeros(6, dtype=torch.float64))])
    projector = Projector(ball_volume, GEOMETRY)
    cut = projector.truncated_rays(views, threshold=0.002)
    chords = projector(views)  # the ball's chord (x 0.02): the rays through its core are long
    assert int((chords > 0.02 * radius).sum()) > 500
    assert not cut[chords > 0.02 * 2.0].any()  # at most grazing rays by the box's touching points


@pytest.mark.parametrize("channels", [1, 2])
def test_support_box_is_the_bounding_box_of_the_non_zero_voxels_one_voxel_wider(channels):
    import numpy as np

    from sopi.drr import _support_box_index

    generator = torch.Generator().manual_seed(channels)
    for trial in range(6):
        data = torch.zeros(channels, 9, 11, 13)
        for _ in range(trial + 1):  # a few voxels anywhere, in any channel, some at the grid's edge
            c, k, j, i = (int(torch.randint(0, size, (1,), generator=generator)) for size in data.shape)
            data[c, k, j, i] = float(torch.randn(1, generator=generator))  # negative values count too
        index = np.argwhere(data.numpy().any(axis=0))  # (N, 3) as (k, j, i)
        low, high = _support_box_index(data)
        assert low.tolist() == (index.min(axis=0)[::-1] - 1.0).tolist()
        assert high.tolist() == (index.max(axis=0)[::-1] + 1.0).tolist()
    low, high = _support_box_index(torch.zeros(channels, 4, 5, 6))
    assert low.tolist() == high.tolist() == [0.0, 0.0, 0.0]


def test_default_ray_chunks_follow_the_threads_and_render_what_one_chunk_renders():
    """On the CPU a render reads 2^18 samples per thread per call, at most 2^20 (the GPU's); the image does not depend
    on it beyond float32 rounding."""
    from sopi.drr import samples_per_chunk

    threads = torch.get_num_threads()
    try:
        expected = {1: 1 << 18, 2: 1 << 19, 3: 3 << 18, 8: 1 << 20}
        for count, samples in expected.items():
            torch.set_num_threads(count)
            assert samples_per_chunk(torch.device("cpu")) == samples
    finally:
        torch.set_num_threads(threads)
    assert samples_per_chunk(torch.device("cuda")) == 1 << 20  # a device object only: no GPU needed
    volume = smooth_volume(2).to(torch.float32)
    poses = random_views(volume.center_world, 3, seed=5)
    default = Projector(volume, GEOMETRY, n_samples=300)
    one_chunk = Projector(volume, GEOMETRY, n_samples=300, max_samples_per_chunk=300 * GEOMETRY.rows * GEOMETRY.cols * 3)
    rays_per_call = samples_per_chunk(torch.device("cpu")) // 300
    assert rays_per_call < 3 * GEOMETRY.rows * GEOMETRY.cols  # the default splits this batch's rays
    assert torch.allclose(default(poses), one_chunk(poses), rtol=1e-5, atol=1e-5)
