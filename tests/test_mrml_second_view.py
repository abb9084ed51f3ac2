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


def test_module_registers_both_xrays_and_shows_the_second_drr(two_view_case):
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
    )
    registration = settings.start_register(logic, parameters).wait()
    settings.store_registration(parameters, registration)
    estimated = torch.from_numpy(logic.camera_from_world(registration.transform_node))
    truth = torch.from_numpy(case.true_camera_from_world)
    assert float(mtre_mm(estimated, truth, target_points(case.vertebrae))) < 1.0
    second = registration.second_drr_node
    assert second is not None and parameters.secondOutputDrr is second
    # the second DRR lies on the second X-ray and looks like it
    np.testing.assert_allclose(nodes.node_ras_from_ijk(second), nodes.node_ras_from_ijk(lateral_node), atol=1e-9)
    assert logic.similarity(lateral_node, second) > 0.9
    assert registration.transform_node.GetNodeReference("SOPIRegistration.SecondXRay") is lateral_node
    assert not registration.result.likely_failed


def test_a_learned_method_with_a_second_xray_fails_before_any_work(two_view_case):
    scene, case, lateral_node, segmentation = two_view_case
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="registers one X-ray"):
        RegistrationLogic(scene).start_register(case.ct_node, case.xray_node, segmentation_node=segmentation, method="rtpi+opt",
                                                second_xray_node=lateral_node)
    assert scene.GetNumberOfNodes() == before
