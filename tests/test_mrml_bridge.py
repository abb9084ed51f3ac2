"""MRML tier (``slicer-core``): node conversions and the frames of the Slicer scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

slicer = pytest.importorskip("slicer", reason="the MRML tier needs slicer-core (make test installs it)")

from SOPIRegistrationLib import frames, nodes  # noqa: E402
from sopi.errors import InputError  # noqa: E402
from sopi.geometry import CArmGeometry, nominal_view, project_points  # noqa: E402
from sopi.volume import Volume  # noqa: E402


def _volume(shape=(6, 7, 8), seed=0) -> Volume:
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(-1000, 1500, shape, generator=generator).to(torch.int16)
    direction = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    world_from_index = torch.eye(4, dtype=torch.float64)
    world_from_index[:3, :3] = direction * torch.tensor([0.7, 0.9, 2.5], dtype=torch.float64)
    world_from_index[:3, 3] = torch.tensor([-30.0, 12.0, 100.0], dtype=torch.float64)
    return Volume(data, world_from_index)


def test_volume_node_round_trip_converts_ras_to_lps():
    scene = slicer.vtkMRMLScene()
    volume = _volume()
    node = nodes.volume_to_node(volume, scene, "ct")
    assert node.GetImageData().GetScalarTypeAsString() == "short"  # dtype kept
    ras = nodes.matrix_from_vtk(_ijk_to_ras(node))
    np.testing.assert_allclose(ras, np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.world_from_index.numpy())
    back = nodes.volume_from_node(node)
    assert torch.equal(back.data, volume.data.to(torch.float32))
    assert torch.allclose(back.world_from_index, volume.world_from_index)


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_volume_from_node_rejects_a_single_slice_and_names_the_node():
    scene = slicer.vtkMRMLScene()
    node = nodes.image_to_node(np.zeros((4, 5), np.float32), np.eye(4), scene, "flat")
    with pytest.raises(InputError, match="flat.*single slice"):
        nodes.volume_from_node(node)
    with pytest.raises(InputError, match="no volume node"):
        nodes.volume_from_node(None)


def test_xray_node_keeps_dtype_and_pixel_order():
    scene = slicer.vtkMRMLScene()
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)  # 3 rows, 4 columns
    node = nodes.image_to_node(image, np.diag([0.5, 0.6, 1.0, 1.0]), scene, "xray")
    assert node.GetImageData().GetScalarTypeAsString() == "unsigned short"
    assert node.GetImageData().GetDimensions() == (4, 3, 1)
    np.testing.assert_array_equal(nodes.xray_image_from_node(node), image.astype(np.float32))
    geometry = nodes.xray_geometry(node, 1000.0)
    assert geometry.shape == (3, 4) and geometry.pixel_spacing_mm == (0.5, 0.6)
    with pytest.raises(InputError, match="slices"):
        nodes.xray_image_from_node(nodes.volume_to_node(_volume(), scene, "ct"))


def test_segmentation_round_trip_and_resampling_onto_the_ct_grid():
    scene, ct, ct_node, mask, segmentation = _ct_and_segmentation()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    back = nodes.mask_from_segmentation(segmentation, ct_node)
    assert torch.equal(back.data, mask)
    # a second CT on a grid shifted by whole voxels: the same segment lands shifted
    shifted = ct.world_from_index.clone()
    shifted[:3, 3] += shifted[:3, :3] @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # one column
    other = nodes.volume_to_node(Volume(ct.data, shifted), scene, "shifted")
    moved = nodes.mask_from_segmentation(segmentation, other)
    assert torch.equal(moved.data[..., :-1], mask[..., 1:])


def _rigid_transform_node(scene, name="placement"):
    """A transform node that turns by 30 deg about S and moves by (40, -25, 300) mm, like the registration transform."""
    angle = np.radians(30.0)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = [40.0, -25.0, 300.0]
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    nodes.set_transform_matrix(node, matrix)
    return node, matrix


def test_mask_ignores_a_parent_transform_shared_with_the_ct():
    """Finding 1 of issue 14: the module places the CT and the spine under the registration
    transform; the mask on the CT's grid must not change (a second Register failed on it)."""
    scene, ct, ct_node, mask, segmentation = _ct_and_segmentation()
    transform, _ = _rigid_transform_node(scene)
    for node in (ct_node, segmentation):
        node.SetAndObserveTransformNodeID(transform.GetID())
    assert torch.equal(nodes.mask_from_segmentation(segmentation, ct_node).data, mask)
    # a segmentation made while the CT is placed lands on the CT's voxels too
    again = nodes.segmentation_from_mask(ct.with_data(mask), scene, ct_node, "again")
    assert again.GetParentTransformNode() is None
    assert torch.equal(nodes.mask_from_segmentation(again, ct_node).data, mask)
    ct_node.SetAndObserveTransformNodeID(None)  # the CT moves back 300 mm; the new segmentation stays where it was made
    with pytest.raises(InputError, match="'again' is empty inside the CT"):
        nodes.mask_from_segmentation(again, ct_node)


def test_mask_follows_a_parent_transform_of_the_segmentation_alone():
    scene, ct, ct_node, mask, segmentation = _ct_and_segmentation()
    # move the segmentation (only) by one CT column: its voxels land one column further
    column_ras = (frames.RAS_FROM_LPS @ ct.world_from_index.numpy())[:3, 0]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "one column")
    shift = np.eye(4)
    shift[:3, 3] = column_ras
    nodes.set_transform_matrix(transform, shift)
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    moved = nodes.mask_from_segmentation(segmentation, ct_node).data
    assert torch.equal(moved[..., 1:], mask[..., :-1]) and moved[..., 0].sum() == 0


def test_empty_segmentation_is_refused():
    scene = slicer.vtkMRMLScene()
    ct = _volume()
    ct_node = nodes.volume_to_node(ct, scene, "ct")
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(InputError, match="empty.*no segments"):
        nodes.mask_from_segmentation(empty, ct_node)


def test_scene_frame_matches_the_engine_projection():
    """A CT point placed by the transform node, cast from the source onto the X-ray node's
    plane, lands on the pixel where the engine projects it."""
    geometry = CArmGeometry(1000.0, 40, 50, (0.8, 0.7), source_to_isocenter_mm=650.0)
    # an X-ray node placed as Slicer places a 2D file: LPS origin and spacing, in RAS
    ras_from_ijk = np.diag([-0.8, -0.7, 1.0, 1.0])
    ras_from_ijk[:3, 3] = [15.0, -40.0, 220.0]
    scene_from_camera = frames.scene_from_camera_for_xray(ras_from_ijk, geometry.sdd_mm, geometry.principal_point_px)
    view = nominal_view("lateral", torch.tensor([5.0, 20.0, -300.0], dtype=torch.float64), 650.0)
    pose = view.pose(torch.tensor([4.0, -3.0, 7.0, 6.0, -5.0, 20.0], dtype=torch.float64))
    transform = frames.transform_from_camera_from_world(pose.numpy(), scene_from_camera)
    points_lps = torch.tensor([[5.0, 20.0, -300.0], [30.0, -10.0, -280.0], [-20.0, 40.0, -330.0]], dtype=torch.float64)
    expected = project_points(pose, geometry, points_lps).numpy()  # (col, row)
    source = scene_from_camera[:3, 3]
    normal = np.cross(ras_from_ijk[:3, 0], ras_from_ijk[:3, 1])
    normal /= np.linalg.norm(normal)
    plane_point = ras_from_ijk[:3, 3]
    for point, pixel in zip(points_lps.numpy(), expected):
        in_scene = transform @ np.append(frames.RAS_FROM_LPS[:3, :3] @ point, 1.0)
        ray = in_scene[:3] - source
        hit = source + ray * ((plane_point - source) @ normal) / (ray @ normal)
        ijk = np.linalg.solve(ras_from_ijk, np.append(hit, 1.0))
        np.testing.assert_allclose(ijk[:2], pixel, atol=1e-6)
        assert abs(ijk[2]) < 1e-6
    round_trip = frames.camera_from_world_from_transform(transform, scene_from_camera)
    np.testing.assert_allclose(round_trip, pose.numpy(), atol=1e-9)


def test_detector_image_sits_on_the_xray_plane():
    geometry = CArmGeometry(1000.0, 40, 50, (0.8, 0.7))
    ras_from_ijk = np.diag([-0.8, -0.7, 1.0, 1.0])
    ras_from_ijk[:3, 3] = [15.0, -40.0, 220.0]
    scene_from_camera = frames.scene_from_camera_for_xray(ras_from_ijk, geometry.sdd_mm, geometry.principal_point_px)
    detector = frames.detector_ras_from_ijk(scene_from_camera, geometry.sdd_mm, geometry.pixel_spacing_mm, geometry.principal_point_px)
    corners = np.array([[0, 0, 0, 1], [49, 0, 0, 1], [0, 39, 0, 1], [49, 39, 0, 1]], dtype=np.float64).T
    np.testing.assert_allclose(detector @ corners, ras_from_ijk @ corners, atol=1e-9)


def test_skewed_xray_axes_are_refused():
    skewed = np.eye(4)
    skewed[:3, 1] = [0.5, 1.0, 0.0]
    with pytest.raises(ValueError, match="not perpendicular"):
        frames.scene_from_camera_for_xray(skewed, 1000.0, (10.0, 10.0))


def test_pose_parameters_round_trip_about_the_pivot():
    reference = nominal_view("ap", torch.tensor([0.0, 10.0, -200.0], dtype=torch.float64), 600.0).camera_from_world.numpy()
    pivot = np.array([0.0, 10.0, -200.0])
    theta = np.array([2.0, -1.0, 5.0, 3.0, 4.0, -10.0])
    pose = frames.pose_from_params(reference, pivot, theta)
    np.testing.assert_allclose(frames.params_from_pose(reference, pivot, pose), theta, atol=1e-9)
    # a pure rotation keeps the pivot where the reference pose put it
    turned = frames.pose_from_params(reference, pivot, np.array([10.0, 0, 0, 0, 0, 0]))
    np.testing.assert_allclose(turned[:3, :3] @ pivot + turned[:3, 3], reference[:3, :3] @ pivot + reference[:3, 3], atol=1e-9)


def test_dicom_geometry_settings_fill_the_gui_fields(tmp_path):
    pytest.importorskip("pydicom")
    from test_io import write_dx

    from SOPIRegistrationLib import dicom_geometry_settings

    write_dx(tmp_path / "dx.dcm")
    assert dicom_geometry_settings(tmp_path / "dx.dcm") == {"sdd_mm": 1200.0, "source_to_isocenter_mm": 800.0, "pixel_spacing_mm": None,
                                                             "patient_orientation": None}
    write_dx(tmp_path / "square.dcm", imager_spacing=(0.2, 0.2), source_to_patient=None, patient_orientation=["R", "F"])
    assert dicom_geometry_settings(tmp_path / "square.dcm") == {"sdd_mm": 1200.0, "source_to_isocenter_mm": None, "pixel_spacing_mm": 0.2,
                                                                 "patient_orientation": "R\\F"}


@pytest.mark.parametrize("tag, view, expected", [
    ("L\\F", "ap", "none"), ("R\\F", "ap", "left-right"), ("R\\H", "ap", "both"), ("H\\L", "ap", "rotated-cw"),
    ("F\\R", "ap", "rotated-ccw"), ("L\\F", "pa", "left-right"), ("P\\F", "lateral", "left-right"),
    ("F\\L", "ap", "diagonal"), ("H\\R", "ap", "anti-diagonal"),  # mirrored across either diagonal
])
def test_the_orientation_setting_follows_the_dicom_tag_and_the_start_view(tag, view, expected):
    """The module presets its *X-ray orientation* from a DICOM X-ray's Patient Orientation; the setting it picks
    turns the image as the engine's own reading of the tag does."""
    from SOPIRegistrationLib.orientation import orientation_setting, xray_orientation
    from sopi.geometry import nominal_view
    from sopi.xray_orientation import orientation_from_tag

    setting, reason = orientation_setting(tag, view)
    assert setting == expected and tag in reason
    engine = orientation_from_tag(tag, nominal_view(view, (10.0, -20.0, 30.0), 675.0).camera_from_world)[0]
    assert xray_orientation(setting) == engine


def test_xray_mask_overlay_labels_the_ignored_regions_on_the_xray_grid():
    from SOPIRegistrationLib import display

    scene = slicer.vtkMRMLScene()
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    composite.SetLayoutName("Red")
    rows, cols = 64, 80
    row, col = np.mgrid[0:rows, 0:cols].astype(np.float32)
    image = 2.0 * np.exp(-(((col - 40) / 30.0) ** 2)) + 0.3 * np.sin(row / 5.0) * np.exp(-(((col - 40) / 8.0) ** 2))
    image[:, 68:] += 4.0  # a collimator blade on the right
    image[30:33, 10:50] += 1.5  # a thin bright instrument
    xray = nodes.image_to_node(image.astype(np.float32), np.diag([0.8, 0.8, 1.0, 1.0]), scene, "xray")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    xray.SetAndObserveTransformNodeID(transform.GetID())
    label = display.show_xray_mask(scene, xray)
    assert label.IsA("vtkMRMLLabelMapVolumeNode") and composite.GetLabelVolumeID() == label.GetID()
    assert label.GetTransformNodeID() == transform.GetID()  # under the X-ray's parent: it moves with it
    np.testing.assert_allclose(nodes.own_ras_from_ijk(label), nodes.own_ras_from_ijk(xray))
    labels = nodes.xray_image_from_node(label)
    assert labels.shape == (rows, cols)
    assert (labels[:, 70:] == 1).mean() > 0.95 and (labels[:, 20:60] == 1).mean() < 0.05
    assert (labels[31, 15:45] == 3).all()
    assert display.show_xray_mask(scene, xray, label, visible=False) is label and composite.GetLabelVolumeID() is None
    again = display.show_xray_mask(scene, xray, label)
    assert again is label and scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 1  # reused, not duplicated


def test_xray_mask_labels_show_a_second_looks_instruments_only_when_asked():
    """Label 4 marks the sides of a straight plate (what a second look at a flagged result drops); the
    regular labels are the same either way, and without ``instruments`` there is no label 4."""
    from SOPIRegistrationLib import display

    rows, cols = np.mgrid[0:256, 0:256].astype(np.float32)
    image = 2.0 * np.exp(-(((cols - 128) / 110.0) ** 2)) + 0.5 * rows / 256
    along, across = (cols - 128) * np.cos(0.9) + (rows - 128) * np.sin(0.9), -(cols - 128) * np.sin(0.9) + (rows - 128) * np.cos(0.9)
    plate = (np.abs(along) <= 75) & (np.abs(across) <= 15)
    image = image + 0.5 * plate + np.random.default_rng(3).normal(0.0, 0.1, image.shape).astype(np.float32)
    plain = display.xray_mask_labels(image)
    shown = display.xray_mask_labels(image, instruments=True)
    assert not (plain == 4).any()
    assert (shown == 4)[plate & (np.abs(across) >= 14)].mean() > 0.8  # the plate's sides
    assert not (shown == 4)[plate & (np.abs(across) <= 5) & (np.abs(along) <= 60)].any()  # its middle stays in use
    assert np.array_equal(np.where(shown == 4, 0, shown), np.where(shown == 4, 0, plain))
    assert display.MASK_LABELS[4].startswith("straight instruments")


def _ct_and_segmentation():
    """A scene with a small CT node and a box-shaped spine segmentation made on its grid."""
    scene = slicer.vtkMRMLScene()
    ct = _volume((8, 9, 10))
    ct_node = nodes.volume_to_node(ct, scene, "ct")
    mask = torch.zeros(8, 9, 10, dtype=torch.uint8)
    mask[2:6, 3:7, 1:8] = 1
    return scene, ct, ct_node, mask, nodes.segmentation_from_mask(ct.with_data(mask), scene, ct_node)
