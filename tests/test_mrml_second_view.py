"""MRML tier (``slicer-core``): the module's registration with a second X-ray (issue 17 step 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

slicer = pytest.importorskip("slicer", reason="the MRML tier needs slicer-core (make test installs it)")

from SOPIRegistrationLib import RegistrationLogic, nodes, settings  # noqa: E402
from SOPIRegistrationLib.logic import geometry_for_xray  # noqa: E402
from SOPIRegistrationLib.sample import load_sample_case  # noqa: E402
from SOPIRegistrationLib.second_view import second_view_geometry, view_from_carm_turn  # noqa: E402
from sopi.benchmark import target_points  # noqa: E402
from sopi.distances import mtre_mm  # noqa: E402
from sopi.errors import InputError  # noqa: E402
from sopi.geometry import invert_rigid, nominal_view  # noqa: E402
from sopi.render import render_drr, rendering_volume  # noqa: E402


def test_a_carm_turn_of_minus_90_deg_takes_the_nominal_ap_view_to_the_lateral_one():
    ap, lateral = (nominal_view(name, (10.0, -20.0, 30.0), 675.0).camera_from_world for name in ("ap", "lateral"))
    assert torch.allclose(view_from_carm_turn(-90.0, 675.0), lateral @ invert_rigid(ap), atol=1e-9)
    assert torch.allclose(view_from_carm_turn(0.0, 675.0), torch.eye(4, dtype=torch.float64), atol=1e-12)


def test_a_second_geometry_file_needs_view_from_reference(tmp_path):
    from sopi.geometry import CArmGeometry

    first = CArmGeometry.preset("perlove-plx118f")
    first.save(tmp_path / "plain.json")
    with pytest.raises(InputError, match="no 'view_from_reference'"):
        second_view_geometry(first, first, None, tmp_path / "plain.json")
    placed = first.with_view_from_reference(view_from_carm_turn(-90.0, 675.0))
    placed.save(tmp_path / "lateral.json")
    assert second_view_geometry(first, first, 30.0, tmp_path / "lateral.json") == placed  # the file wins over the turn
    assert second_view_geometry(first, first, -90.0) == placed


@pytest.fixture(scope="module")
def two_view_case():
    """The sample case plus a lateral X-ray node of the same true pose (C-arm turned by -90 deg)."""
    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    first = geometry_for_xray(case.xray_node)
    lateral = first.with_view_from_reference(view_from_carm_turn(-90.0, first.source_to_isocenter_mm))
    truth = torch.from_numpy(case.true_camera_from_world)
    image = render_drr(rendering_volume(nodes.volume_from_node(case.ct_node), "hu"), lateral, lateral.reference_transform() @ truth)
    ras_from_ijk = nodes.node_ras_from_ijk(case.xray_node).copy()
    ras_from_ijk[0, 3] += 400.0  # beside the first X-ray
    lateral_node = nodes.image_to_node(image.numpy().astype(np.float32), ras_from_ijk, scene, "lateral X-ray")
    spine = case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8))
    segmentation = nodes.segmentation_from_mask(spine, scene, case.ct_node)
    return scene, case, lateral_node, segmentation


@pytest.fixture(scope="module")
def registered(two_view_case):
    """The module's two-view registration (``opt``) of the sample case, as its Register button runs it."""
    from pathlib import Path
    from types import SimpleNamespace

    scene, case, lateral_node, segmentation = two_view_case
    logic = RegistrationLogic(scene)
    parameters = SimpleNamespace(
        ctVolume=case.ct_node, xrayVolume=case.xray_node, spineSegmentation=segmentation, initialTransform=None,
        geometryPreset="perlove-plx118f", sourceToDetectorMm=1011.7, sourceToIsocenterMm=675.0, pixelSpacingMm=0.0,
        xrayPolarity="bone-bright", method="opt", device="cpu", rtpiModel=Path("."), fineModel=Path("."), outputTransform=None,
        outputDrr=None, seed=0, rayStepMm=1.0, iterationScale=0.5, pyramid=True, modelFolder=Path("."),
        secondXrayVolume=lateral_node, secondViewTurnDeg=-90.0, secondGeometryFile=Path("."), secondOutputDrr=None,
        foregroundOpacity=0.5, fusionMode="blend", fusionImage=None, placeCtInCarm=True, carmMarker=None, secondCarmMarker=None,
        xrayMaskLabel=None, showXrayMask=False,
    )
    registration = settings.start_register(logic, parameters).wait()
    settings.store_registration(parameters, registration)
    return logic, parameters, registration


def test_module_registers_both_xrays_and_shows_the_second_drr(two_view_case, registered):
    scene, case, lateral_node, segmentation = two_view_case
    logic, parameters, registration = registered
    estimated = torch.from_numpy(logic.camera_from_world(registration.transform_node))
    truth = torch.from_numpy(case.true_camera_from_world)
    assert float(mtre_mm(estimated, truth, target_points(case.vertebrae))) < 1.0
    second = registration.second_drr_node
    assert second is not None and parameters.secondOutputDrr is second
    # the second DRR lies on the second X-ray and looks like it
    np.testing.assert_allclose(nodes.node_ras_from_ijk(second), nodes.node_ras_from_ijk(lateral_node), atol=1e-9)
    assert logic.similarity(lateral_node, second) > 0.9
    assert registration.transform_node.GetNodeReference("SOPIRegistration.SecondXRay") is lateral_node
    # a right two-view result is trusted; its confidence is the lower of the two X-rays'
    result = registration.result
    assert not result.likely_failed and 0.5 < result.confidence <= 1.0
    per_view = settings.view_confidences(result)
    assert len(per_view) == 2 and all(0.0 <= value <= 1.0 for value in per_view)
    assert result.confidence == pytest.approx(min(per_view), abs=1e-4)


def _lateral_geometry(case):
    """The lateral view as the fixture built it: the C-arm turned by -90 deg (not what the registration stored)."""
    first = geometry_for_xray(case.xray_node)
    return first.with_view_from_reference(view_from_carm_turn(-90.0, first.source_to_isocenter_mm))


def test_the_pose_sliders_move_the_second_drr_with_the_first(two_view_case, registered):
    scene, case, lateral_node, _ = two_view_case
    logic, parameters, registration = registered
    transform = registration.transform_node
    volume = rendering_volume(nodes.volume_from_node(case.ct_node), "hu")
    lateral = _lateral_geometry(case)
    try:
        logic.set_pose_param(transform, 5, 20.0)  # 20 mm along the first X-ray's principal ray: the lateral sees it across
        settings.render_pose_drrs(logic, parameters, device="cpu")
        second = parameters.secondOutputDrr
        assert second is registration.second_drr_node  # re-rendered into the same node, still on the second X-ray
        np.testing.assert_allclose(nodes.node_ras_from_ijk(second), nodes.node_ras_from_ijk(lateral_node), atol=1e-9)
        moved = torch.from_numpy(logic.camera_from_world(transform))
        expected = render_drr(volume, lateral, lateral.reference_transform() @ moved).numpy()
        np.testing.assert_allclose(nodes.xray_image_from_node(second), expected, rtol=1e-4, atol=1e-4 * float(expected.max()))
        first_moved, second_moved = settings.similarities(logic, parameters)
        assert second_moved < 0.5 and first_moved > 0.7  # depth: a small change for the first X-ray, a shift of the second
        logic.reset_pose(transform)
        settings.render_pose_drrs(logic, parameters, binning=2, device="cpu")  # the coarse preview while dragging
        assert nodes.xray_image_from_node(parameters.secondOutputDrr).shape == (lateral.rows // 2, lateral.cols // 2)
        settings.render_pose_drrs(logic, parameters, device="cpu")
        assert min(settings.similarities(logic, parameters)) > 0.9
    finally:
        logic.reset_pose(transform)


def _scene_point(transform, camera_from_world: np.ndarray, camera_point) -> np.ndarray:
    """Where the CT placed under ``transform`` puts a point given in a camera's frame (RAS mm)."""
    from SOPIRegistrationLib.frames import RAS_FROM_LPS

    world = np.linalg.inv(camera_from_world) @ np.array([*camera_point, 1.0])
    return (nodes.transform_matrix(transform) @ RAS_FROM_LPS @ world)[:3]


def test_the_3d_view_shows_the_second_carm_where_it_stood(two_view_case, registered):
    from types import SimpleNamespace

    scene, case, lateral_node, _ = two_view_case
    logic, parameters, registration = registered
    transform = registration.transform_node
    lateral = _lateral_geometry(case)
    logic.set_pose_param(transform, 0, 4.0)  # the markers stay with the C-arms while the pose (and the CT) moves
    try:
        shown = settings.show_results(logic, scene, parameters)
        first, second = shown["carmMarker"], shown["secondCarmMarker"]
        assert second is not None and second is not first and second.GetDisplayNode().GetVisibility()
        pose = logic.camera_from_world(transform)
        second_pose = lateral.reference_transform().numpy() @ pose
        for marker, camera_from_world, sdd in ((first, pose, 1011.7), (second, second_pose, lateral.sdd_mm)):
            for index, depth in enumerate((0.0, sdd)):  # source, then the detector's principal point
                point = np.array(marker.GetNthControlPointPosition(index))
                np.testing.assert_allclose(point, _scene_point(transform, camera_from_world, (0.0, 0.0, depth)), atol=1e-6)
        rays = [np.subtract(marker.GetNthControlPointPosition(1), marker.GetNthControlPointPosition(0)) for marker in (first, second)]
        assert abs(float(rays[0] @ rays[1])) < 1e-6 * float(np.linalg.norm(rays[0]) * np.linalg.norm(rays[1]))  # AP and lateral
        single = SimpleNamespace(**{**vars(parameters), "secondXrayVolume": None, "secondCarmMarker": second})
        assert settings.show_results(logic, scene, single)["secondCarmMarker"] is second and not second.GetDisplayNode().GetVisibility()
        assert settings.similarities(logic, single) == settings.similarities(logic, parameters)[:1]
    finally:
        logic.reset_pose(transform)


def test_a_stored_second_view_can_be_forgotten(two_view_case):
    """What a single-view registration into a transform that held two views does first (``_write_registration``)."""
    from SOPIRegistrationLib import second_view

    scene, case, lateral_node, _ = two_view_case
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "copy")
    second_view.store_second_view(transform, _lateral_geometry(case),
                                  {"matrix": np.eye(4).tolist(), "views": [{}, {"matrix": np.eye(4).tolist()}]}, lateral_node)
    assert second_view.has_second_view(transform)
    second_view.forget_second_view(transform)
    assert not second_view.has_second_view(transform) and transform.GetNodeReference("SOPIRegistration.SecondXRay") is None
    with pytest.raises(InputError, match="holds no two-view registration"):
        second_view.stored_second_view(transform)


def test_a_learned_method_with_a_second_xray_fails_before_any_work(two_view_case):
    scene, case, lateral_node, segmentation = two_view_case
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="registers one X-ray"):
        RegistrationLogic(scene).start_register(case.ct_node, case.xray_node, segmentation_node=segmentation, method="rtpi+opt",
                                                second_xray_node=lateral_node)
    assert scene.GetNumberOfNodes() == before
