"""MRML tier (``slicer-core``): ``RegistrationLogic`` on a scene holding the shipped sample case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

slicer = pytest.importorskip("slicer", reason="the MRML tier needs slicer-core (make test installs it)")

from SOPIRegistrationLib import RegistrationLogic, display, frames, nodes  # noqa: E402
from SOPIRegistrationLib.sample import load_sample_case  # noqa: E402
from sopi.benchmark import target_points  # noqa: E402
from sopi.distances import mtre_mm  # noqa: E402
from sopi.errors import Cancelled, InputError  # noqa: E402
from sopi.render import render_drr, rendering_volume  # noqa: E402
from sopi.segment import dice  # noqa: E402


def _node_ids(scene) -> list[str]:
    return [scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())]


def _array(node) -> np.ndarray:
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).copy()


@pytest.fixture(scope="module")
def registered():
    """The sample case registered once with rtpi+opt (spine from the reference labels)."""
    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    ct_before, xray_before = _array(case.ct_node), _array(case.xray_node)
    spine = case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8))
    segmentation = nodes.segmentation_from_mask(spine, scene, case.ct_node)
    logic = RegistrationLogic(scene)
    before = _node_ids(scene)
    messages = []
    registration = logic.register(case.ct_node, case.xray_node, segmentation_node=segmentation, method="rtpi+opt",
                                  device="cpu", progress=lambda fraction, message: messages.append((fraction, message)))
    return {"scene": scene, "case": case, "logic": logic, "registration": registration, "before": before,
            "messages": messages, "ct_before": ct_before, "xray_before": xray_before, "segmentation": segmentation}


def _mtre(logic, transform_node, case) -> float:
    estimated = torch.from_numpy(logic.camera_from_world(transform_node))
    return float(mtre_mm(estimated, torch.from_numpy(case.true_camera_from_world), target_points(case.vertebrae)))


def test_register_recovers_the_simulated_pose(registered):
    case, logic, registration = registered["case"], registered["logic"], registered["registration"]
    assert _mtre(logic, registration.transform_node, case) < 1.0
    assert [stage["stage"] for stage in registration.result.stages][0] == "rtpi"
    # the confidence travels from the engine process to the result and the transform node
    assert 0.5 < registration.result.confidence <= 1.0 and not registration.result.likely_failed
    attribute = registration.transform_node.GetAttribute("SOPIRegistration.Confidence")
    assert float(attribute) == pytest.approx(registration.result.confidence, abs=1e-4)
    assert registration.transform_node.GetAttribute("SOPIRegistration.LikelyFailed") == "false"
    assert registration.result.mask_source == "given"  # read back from the engine process's result JSON
    assert "orientation" in registration.result.xray_preparation  # so is what the preparation found
    assert registration.transform_node.GetAttribute("SOPIRegistration.InstrumentsMasked") == "false"  # no second look
    fractions = [fraction for fraction, _ in registered["messages"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_register_writes_only_new_output_nodes_and_keeps_inputs(registered):
    scene, case, registration = registered["scene"], registered["case"], registered["registration"]
    added = [node_id for node_id in _node_ids(scene) if node_id not in registered["before"]]
    added_data = {node_id for node_id in added if scene.GetNodeByID(node_id).IsA("vtkMRMLStorableNode")}
    assert added_data == {registration.transform_node.GetID(), registration.drr_node.GetID()}
    np.testing.assert_array_equal(_array(case.ct_node), registered["ct_before"])
    np.testing.assert_array_equal(_array(case.xray_node), registered["xray_before"])
    assert case.ct_node.GetParentTransformNode() is None


def test_drr_node_lies_on_the_xray_and_matches_the_engine(registered):
    case, logic, registration = registered["case"], registered["logic"], registered["registration"]
    drr = registration.drr_node
    assert drr.GetImageData().GetDimensions() == case.xray_node.GetImageData().GetDimensions()
    np.testing.assert_allclose(nodes.node_ras_from_ijk(drr), nodes.node_ras_from_ijk(case.xray_node), atol=1e-9)
    # independently: the engine's DRR at the transform node's pose
    expected = render_drr(rendering_volume(nodes.volume_from_node(case.ct_node), "hu"), registration.geometry,
                          torch.from_numpy(logic.camera_from_world(registration.transform_node)))
    np.testing.assert_allclose(nodes.xray_image_from_node(drr), expected.numpy(), rtol=1e-5, atol=1e-5)
    assert logic.similarity(case.xray_node, drr) > 0.95


def test_binned_render_keeps_the_detector_extent(registered):
    scene, case, logic, registration = registered["scene"], registered["case"], registered["logic"], registered["registration"]
    coarse = logic.render_drr(case.ct_node, registration.transform_node, xray_node=case.xray_node, binning=2)
    assert coarse.GetImageData().GetDimensions() == (128, 128, 1)
    np.testing.assert_allclose(coarse.GetSpacing()[:2], 2 * np.array(case.xray_node.GetSpacing()[:2]))
    corner_fine = nodes.node_ras_from_ijk(case.xray_node) @ np.array([-0.5, -0.5, 0, 1])
    corner_coarse = nodes.node_ras_from_ijk(coarse) @ np.array([-0.5, -0.5, 0, 1])
    np.testing.assert_allclose(corner_coarse, corner_fine, atol=1e-6)
    scene.RemoveNode(coarse)


def test_drr_nodes_of_large_xrays_are_drawn_on_fewer_pixels_over_the_same_detector(registered, monkeypatch):
    """A DRR node is rendered on at most DRR_NODE_MAX_PX pixels (a 2560-pixel radiograph's full-size DRR took 40 s):
    here 100, so the 256-pixel X-ray's DRR is drawn on 86 x 86 pixels covering the X-ray node exactly, with the
    engine's DRR on that detector."""
    from SOPIRegistrationLib import logic as logic_module

    scene, case, logic, registration = registered["scene"], registered["case"], registered["logic"], registered["registration"]
    monkeypatch.setattr(logic_module, "DRR_NODE_MAX_PX", 100)
    capped = logic.render_drr(case.ct_node, registration.transform_node, xray_node=case.xray_node)
    assert capped.GetImageData().GetDimensions() == (86, 86, 1)
    for corner in ([-0.5, -0.5, 0, 1], [85.5, 85.5, 0, 1]):
        fine_corner = np.array(corner) * [256 / 86, 256 / 86, 1, 1] - [0.5 - 0.5 * 256 / 86, 0.5 - 0.5 * 256 / 86, 0, 0]
        np.testing.assert_allclose(nodes.node_ras_from_ijk(capped) @ np.array(corner), nodes.node_ras_from_ijk(case.xray_node) @ fine_corner,
                                   atol=1e-6)
    expected = render_drr(rendering_volume(nodes.volume_from_node(case.ct_node), "hu"), registration.geometry.resized(86, 86),
                          torch.from_numpy(logic.camera_from_world(registration.transform_node)))
    np.testing.assert_allclose(nodes.xray_image_from_node(capped), expected.numpy(), rtol=1e-5, atol=1e-5)
    scene.RemoveNode(capped)


def test_pose_sliders_move_about_the_registered_pose(registered):
    case, logic, registration = registered["case"], registered["logic"], registered["registration"]
    transform, drr = registration.transform_node, registration.drr_node
    theta = np.array([1.5, -2.0, 3.0, 8.0, -4.0, 12.0])
    logic.set_pose_params(transform, theta)
    np.testing.assert_allclose(logic.pose_params(transform), theta, atol=1e-9)
    moved = logic.render_drr(case.ct_node, transform, xray_node=case.xray_node)
    assert logic.similarity(case.xray_node, moved) < logic.similarity(case.xray_node, drr)
    assert _mtre(logic, transform, case) > 5.0
    logic.reset_pose(transform)
    np.testing.assert_allclose(logic.pose_params(transform), np.zeros(6), atol=1e-9)
    registered["scene"].RemoveNode(moved)
    # one slider moves one parameter; the others keep their values, even beyond the sliders' ranges
    logic.set_pose_params(transform, [0.0, 0.0, 0.0, 0.0, 0.0, 150.0])
    logic.set_pose_param(transform, 0, 2.5)
    np.testing.assert_allclose(logic.pose_params(transform), [2.5, 0, 0, 0, 0, 150.0], atol=1e-9)
    logic.reset_pose(transform)


def test_scene_round_trip_keeps_the_registration(registered, tmp_path):
    scene, case, registration = registered["scene"], registered["case"], registered["registration"]
    parameters = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "SOPIRegistration")
    parameters.SetParameter("method", "rtpi+opt")
    parameters.SetNodeReferenceID("outputTransform", registration.transform_node.GetID())
    # the display nodes the module keeps as parameter-node references (finding 9)
    geometry, scene_from_camera = registered["logic"].registration_geometry(registration.transform_node)
    marker = display.show_carm(scene, scene_from_camera, geometry.sdd_mm)
    fusion = display.show_fusion(scene, case.xray_node, registration.drr_node, 0.5, "checkerboard")
    parameters.SetNodeReferenceID("carmMarker", marker.GetID())
    parameters.SetNodeReferenceID("fusionImage", fusion.GetID())
    storable = [case.ct_node, case.xray_node, registration.drr_node, registration.transform_node, registered["segmentation"], fusion]
    for node in storable:
        node.AddDefaultStorageNode()
        storage = node.GetStorageNode()
        storage.SetFileName(str(tmp_path / f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"))
        assert storage.WriteData(node)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    scene.RemoveNode(parameters)

    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(tmp_path / "scene.mrml"))
    assert reloaded.Connect()
    parameters = reloaded.GetFirstNodeByName("SOPIRegistration")
    assert parameters.GetParameter("method") == "rtpi+opt"
    # (slicer-core has no markups storage node: the line's points are not saved here, the node and its reference are)
    assert parameters.GetNodeReference("carmMarker").IsA("vtkMRMLMarkupsLineNode")
    reloaded_fusion = parameters.GetNodeReference("fusionImage")
    assert reloaded_fusion.GetAttribute("SOPIRegistration.Output") == "1"  # never offered as an input after a reload
    np.testing.assert_allclose(nodes.xray_image_from_node(reloaded_fusion), nodes.xray_image_from_node(fusion), rtol=1e-6)
    transform = parameters.GetNodeReference("outputTransform")
    np.testing.assert_allclose(nodes.transform_matrix(transform), nodes.transform_matrix(registration.transform_node), atol=1e-9)
    logic = RegistrationLogic(reloaded)
    assert transform.GetAttribute("SOPIRegistration.Method") == "rtpi+opt"
    np.testing.assert_allclose(logic.pose_params(transform), np.zeros(6), atol=1e-9)
    ct_node = transform.GetNodeReference("SOPIRegistration.CT")
    xray_node = transform.GetNodeReference("SOPIRegistration.XRay")
    assert ct_node.GetName() == case.ct_node.GetName() and xray_node.GetName() == case.xray_node.GetName()
    # the stored geometry and scene frame re-render the same DRR without the X-ray node
    drr = logic.render_drr(ct_node, transform)
    np.testing.assert_allclose(nodes.xray_image_from_node(drr), nodes.xray_image_from_node(registration.drr_node), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nodes.node_ras_from_ijk(drr), nodes.node_ras_from_ijk(xray_node), atol=1e-6)


def test_register_reuses_the_given_output_nodes():
    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "mine")
    drr = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my DRR")
    spine = nodes.segmentation_from_mask(case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8)), scene, case.ct_node)
    before = _node_ids(scene)
    logic = RegistrationLogic(scene)
    result = logic.register(case.ct_node, case.xray_node, segmentation_node=spine, method="rtpi", transform_node=transform,
                            drr_node=drr, device="cpu")
    assert result.transform_node is transform and result.drr_node is drr
    assert _node_ids(scene) == before
    from sopi.geometry import nominal_view
    from sopi.segment import mask_centroid_world

    start = nominal_view("ap", mask_centroid_world(case.vertebrae), result.geometry.source_to_isocenter_mm).camera_from_world
    start_error = float(mtre_mm(start, torch.from_numpy(case.true_camera_from_world), target_points(case.vertebrae)))
    assert _mtre(logic, transform, case) < 0.75 * start_error  # RTPI alone: an initialisation


def _module_parameters(case, **changes):
    """The module's parameter node as SOPIRegistrationLib.settings reads it (its fields and defaults)."""
    from pathlib import Path
    from types import SimpleNamespace

    fields = dict(ctVolume=case.ct_node, xrayVolume=case.xray_node, spineSegmentation=None, initialTransform=None,
                  geometryPreset="perlove-plx118f", sourceToDetectorMm=1011.7, sourceToIsocenterMm=675.0, pixelSpacingMm=0.0,
                  xrayPolarity="bone-bright", method="sopi+opt", device="cpu", rtpiModel=Path("."), fineModel=Path("."),
                  trainingMinutes=30.0, outputTransform=None, outputDrr=None, seed=0, rayStepMm=1.0, iterationScale=1.0,
                  pyramid=True, modelFolder=Path("."), placeCtInCarm=True)
    fields.update(changes)
    return SimpleNamespace(**fields)


def test_second_registration_with_the_ct_placed_in_the_carm_frame():
    """Issue 14's scenario, through the calls the module makes (SOPIRegistrationLib.settings): segment,
    register, place the CT and spine as the module shows them, register again into the same output
    nodes: both succeed, nothing is duplicated, inputs are kept."""
    from SOPIRegistrationLib import settings

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    ct_before, xray_before = _array(case.ct_node), _array(case.xray_node)
    logic = RegistrationLogic(scene)
    parameters = _module_parameters(case, method="rtpi")
    parameters.spineSegmentation = logic.segment_spine(case.ct_node)
    spine = parameters.spineSegmentation
    first = settings.start_register(logic, parameters).wait(timeout_s=300)
    settings.store_registration(parameters, first)
    first_pose = logic.camera_from_world(first.transform_node)
    display.place_in_carm(parameters.outputTransform, [case.ct_node, spine], parameters.placeCtInCarm)
    assert case.ct_node.GetParentTransformNode() is first.transform_node
    before = _node_ids(scene)
    second = settings.start_register(logic, parameters).wait(timeout_s=300)
    settings.store_registration(parameters, second)
    assert second.transform_node is first.transform_node and second.drr_node is first.drr_node
    assert _node_ids(scene) == before
    # the same inputs give the same pose (RTPI is deterministic), whatever the CT's placement
    np.testing.assert_allclose(logic.camera_from_world(second.transform_node), first_pose, atol=1e-4)
    np.testing.assert_array_equal(_array(case.ct_node), ct_before)
    np.testing.assert_array_equal(_array(case.xray_node), xray_before)
    assert case.ct_node.GetParentTransformNode() is first.transform_node and spine.GetParentTransformNode() is first.transform_node
    np.testing.assert_allclose(nodes.node_ras_from_ijk(second.drr_node), nodes.node_ras_from_ijk(case.xray_node), atol=1e-9)
    # unplacing takes out only what sits under the registration transform
    own = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "user's transform")
    spine.SetAndObserveTransformNodeID(own.GetID())
    display.place_in_carm(first.transform_node, [case.ct_node, spine], place=False)
    assert case.ct_node.GetParentTransformNode() is None and spine.GetParentTransformNode() is own


def test_module_picks_inputs_but_never_its_outputs_or_label_maps():
    from SOPIRegistrationLib.inputs import choose_inputs, mark_output
    from sopi.volume import Volume

    scene = slicer.vtkMRMLScene()
    label_map = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")  # first in the scene, 3D
    nodes._set_image(label_map, np.zeros((4, 5, 6), np.uint8), np.eye(4))
    mark_output(nodes.image_to_node(np.zeros((8, 9), np.float32), np.eye(4), scene, "an old DRR"))  # first single slice
    ct = nodes.volume_to_node(Volume(torch.zeros(4, 5, 6), torch.eye(4, dtype=torch.float64)), scene, "CT")
    xray = nodes.image_to_node(np.ones((8, 9), np.float32), np.eye(4), scene, "X-ray")
    assert choose_inputs(scene) == (ct, xray)
    assert choose_inputs(scene, ct_node=label_map) == (label_map, xray)  # a choice already made is kept
    assert choose_inputs(slicer.vtkMRMLScene()) == (None, None)


@pytest.mark.parametrize("method", ["rtpi", "global+opt"])
def test_register_segments_the_spine_when_none_is_given(method):
    """A method that needs the spine segments it in the engine's one process (``--mask-out``), and the scene gets the
    very mask the engine used: ``sopi segment``'s."""
    from sopi.segment import segment_spine

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    logic = RegistrationLogic(scene)
    job = logic.start_register(case.ct_node, case.xray_node, method=method, device="cpu", iteration_scale=0.2)
    assert len(job.steps) == 1  # no second engine process for the segmentation
    result = job.wait(timeout_s=600)
    assert result.segmentation_node is not None and result.segmentation_node.GetName() == f"{case.ct_node.GetName()} spine"
    mask = nodes.mask_from_segmentation(result.segmentation_node, case.ct_node)
    assert torch.equal(mask.data != 0, segment_spine(nodes.volume_from_node(case.ct_node)).data != 0)
    assert dice(mask, case.vertebrae.data != 0) > 0.7


def test_cancelled_background_registration_leaves_the_scene_unchanged():
    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    before = _node_ids(scene)
    events = {"progress": 0, "error": None, "done": None}
    logic = RegistrationLogic(scene)

    def on_progress(fraction, message):
        events["progress"] += 1
        events["pid"] = job.pid
        job.cancel()

    job = logic.start_register(case.ct_node, case.xray_node, method="opt", device="cpu", on_progress=on_progress,
                               on_done=lambda result: events.update(done=result), on_error=lambda error: events.update(error=error))
    folder = job.folder
    assert folder.exists() and {"ct.mha", "xray.mha", "geometry.json"} <= {path.name for path in folder.iterdir()}
    with pytest.raises(Cancelled):
        job.wait(timeout_s=120)
    assert events["progress"] >= 1 and isinstance(events["error"], Cancelled) and events["done"] is None
    assert _node_ids(scene) == before and not job.running
    # the engine process (a process group of its own) is gone, and so is the job's folder
    from test_process import _wait_gone

    assert _wait_gone(events["pid"]) and not folder.exists()


def test_worker_errors_reach_on_error_and_leave_the_scene_unchanged(tmp_path):
    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    before = _node_ids(scene)
    errors = []
    job = RegistrationLogic(scene).start_register(
        case.ct_node, case.xray_node, method="rtpi", device="cpu", model=tmp_path / "missing.pt", on_error=errors.append,
    )
    with pytest.raises(InputError, match="missing.pt"):
        job.wait(timeout_s=120)
    assert len(errors) == 1 and _node_ids(scene) == before


def test_bad_inputs_fail_before_any_work_and_name_the_node():
    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    logic = RegistrationLogic(scene)
    with pytest.raises(InputError, match="SOPI sample X-ray.*single slice"):
        logic.start_register(case.xray_node, case.ct_node)
    with pytest.raises(InputError, match="unknown method"):
        logic.start_register(case.ct_node, case.xray_node, method="magic")


def test_fusion_display_modes(registered):
    scene, case, registration = registered["scene"], registered["case"], registered["registration"]
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetLayoutName("Red")
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    composite.SetLayoutName("Red")
    assert display.show_fusion(scene, case.xray_node, registration.drr_node, 0.3, "blend") is None
    assert composite.GetBackgroundVolumeID() == case.xray_node.GetID()
    assert composite.GetForegroundVolumeID() == registration.drr_node.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.3)
    slice_to_ras = nodes.matrix_from_vtk(slice_node.GetSliceToRAS())
    ras_from_ijk = nodes.node_ras_from_ijk(case.xray_node)
    np.testing.assert_allclose(slice_to_ras[:3, 0], ras_from_ijk[:3, 0] / np.linalg.norm(ras_from_ijk[:3, 0]), atol=1e-9)
    np.testing.assert_allclose(slice_to_ras[:3, 1], -ras_from_ijk[:3, 1] / np.linalg.norm(ras_from_ijk[:3, 1]), atol=1e-9)
    fusion = display.show_fusion(scene, case.xray_node, registration.drr_node, 0.3, "checkerboard")
    assert composite.GetBackgroundVolumeID() == fusion.GetID() and composite.GetForegroundVolumeID() is None
    np.testing.assert_allclose(nodes.node_ras_from_ijk(fusion), ras_from_ijk)
    again = display.show_fusion(scene, case.xray_node, registration.drr_node, 0.3, "edges", fusion)
    assert again is fusion
    with pytest.raises(ValueError, match="fusion mode"):
        display.show_fusion(scene, case.xray_node, registration.drr_node, 0.3, "stereo")


def test_prepared_models_are_trained_on_this_ct(registered, tmp_path):
    case, logic = registered["case"], registered["logic"]
    assert logic.model_warnings(case.ct_node) == []  # the shipped models were trained on the sample CT
    geometry = registered["registration"].geometry
    models = logic.prepare_models(case.ct_node, registered["segmentation"], geometry, tmp_path, minutes=0.02, device="cpu")
    from sopi.nets.model_file import load_model

    assert {kind: load_model(path).kind for kind, path in models.items()} == {"rtpi": "rtpi", "fine": "fine"}
    assert logic.model_warnings(case.ct_node, models) == []
    scene = registered["scene"]
    other = nodes.volume_to_node(nodes.volume_from_node(case.ct_node).with_data(torch.zeros(128, 128, 128)), scene, "other CT")
    warnings = logic.model_warnings(other, models)
    assert len(warnings) == 2 and all("another CT" in warning for warning in warnings)
    scene.RemoveNode(other)
    with pytest.raises(InputError, match="segmentation"):
        logic.prepare_models(case.ct_node, None, geometry, tmp_path)


def test_carm_marker_runs_from_the_source_to_the_principal_point(registered):
    scene, case, logic, registration = registered["scene"], registered["case"], registered["logic"], registered["registration"]
    geometry, scene_from_camera = logic.registration_geometry(registration.transform_node)
    line = display.show_carm(scene, scene_from_camera, geometry.sdd_mm)
    source, detector = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    line.GetNthControlPointPosition(0, source)
    line.GetNthControlPointPosition(1, detector)
    principal = nodes.node_ras_from_ijk(case.xray_node) @ np.array([*geometry.principal_point_px, 0.0, 1.0])
    np.testing.assert_allclose(detector, principal[:3], atol=1e-3)
    assert np.linalg.norm(np.subtract(detector, source)) == pytest.approx(geometry.sdd_mm, abs=1e-3)
    # the registered CT sits between the source and the detector: its spine centroid projects inside the image
    pivot_ras = _placed_pivot_ras(registration)
    assert 0 < np.dot(pivot_ras - source, np.subtract(detector, source)) / geometry.sdd_mm ** 2 < 1
    assert display.show_carm(scene, scene_from_camera, geometry.sdd_mm, line) is line and line.GetNumberOfControlPoints() == 2


def _placed_pivot_ras(registration) -> np.ndarray:
    """The spine centroid (pivot) placed by the registration transform, in scene RAS."""
    pivot_lps = registration.result.pivot_world.numpy()
    transform = nodes.transform_matrix(registration.transform_node)
    return (transform @ np.append(frames.RAS_FROM_LPS[:3, :3] @ pivot_lps, 1.0))[:3]


def test_progress_messages_read_as_stages(registered):
    from SOPIRegistrationLib.logic import readable_progress

    assert readable_progress("fine 12/60") == "Fine registration 12/60"
    assert readable_progress("cma-es gc 1/4 3/40") == "CMA-ES search (gc, 1/4 detector) 3/40"
    assert readable_progress("done") == "Done"
    messages = [message for _, message in registered["messages"]]
    assert any(message.startswith("RTPI") for message in messages)
    assert any(message.startswith("Gradient descent (gc, 1/2 detector)") for message in messages)


@pytest.mark.parametrize("flip", ["left-right", "rotated-cw"])
def test_a_turned_xray_node_registers_turned_back_and_its_drr_lies_over_it(flip):
    """The sample X-ray stored mirrored left-right, or turned 90 deg clockwise, on the same detector: with the
    module's orientation setting the engine registers the image turned back (the true pose), the DRR node is
    drawn turned the same way so that it lies over the X-ray node pixel for pixel, and the pose sliders'
    renders keep that."""
    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    spine = case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8))
    segmentation = nodes.segmentation_from_mask(spine, scene, case.ct_node)
    image = nodes.xray_image_from_node(case.xray_node)
    rows, cols = image.shape
    if flip == "left-right":
        stored, where = image[:, ::-1].copy(), lambda c, r: (cols - 1 - c, r)  # the conventional pixel (c, r) lies at where(c, r)
    else:
        stored, where = np.rot90(image, -1).copy(), lambda c, r: (rows - 1 - r, c)
    turned_node = nodes.image_to_node(stored, nodes.node_ras_from_ijk(case.xray_node), scene, "turned X-ray")
    logic = RegistrationLogic(scene)
    registration = logic.register(case.ct_node, turned_node, segmentation_node=segmentation, method="opt", device="cpu", flip=flip)
    transform = registration.transform_node
    assert _mtre(logic, transform, case) < 1.0 and transform.GetAttribute("SOPIRegistration.XrayFlip") == flip
    np.testing.assert_array_equal(nodes.xray_image_from_node(turned_node), stored)  # the input is left alone
    drr, xray_frame = registration.drr_node, nodes.node_ras_from_ijk(turned_node)
    for column, row in ((0, 0), (17, 100), (cols - 1, rows - 1)):  # the DRR's pixel (c, r) lies on the X-ray's where(c, r)
        np.testing.assert_allclose(nodes.node_ras_from_ijk(drr) @ [column, row, 0, 1], xray_frame @ [*where(column, row), 0, 1], atol=1e-6)
    assert float(np.corrcoef(nodes.xray_image_from_node(drr).ravel(), image.ravel())[0, 1]) > 0.95  # the conventional image
    assert logic.similarity(turned_node, drr) > 0.95  # it reads the turned DRR node the right way round
    again = logic.render_drr(case.ct_node, transform, xray_node=turned_node)  # what a pose slider renders
    np.testing.assert_allclose(nodes.xray_image_from_node(again), nodes.xray_image_from_node(drr), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nodes.node_ras_from_ijk(again), nodes.node_ras_from_ijk(drr), atol=1e-9)
    as_stored = logic.register(case.ct_node, turned_node, segmentation_node=segmentation, method="opt", device="cpu", iteration_scale=0.5)
    assert _mtre(logic, as_stored.transform_node, case) > 3.0
    with pytest.raises(InputError, match="X-ray orientation 'sideways'"):
        logic.register(case.ct_node, turned_node, segmentation_node=segmentation, method="opt", device="cpu", flip="sideways")


def test_the_start_view_reaches_the_engine_a_pa_xray_registers_from_pa():
    """No initial pose: the module's start view decides where the engine starts. A PA X-ray of the sample
    CT (beam posterior to anterior) on the sample X-ray's detector registers from the PA view."""
    from sopi.geometry import nominal_view
    from sopi.segment import mask_centroid_world

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    spine = case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8))
    segmentation = nodes.segmentation_from_mask(spine, scene, case.ct_node)
    logic = RegistrationLogic(scene)
    geometry = nodes.xray_geometry(case.xray_node, 1011.7, source_to_isocenter_mm=675.0)
    pa = nominal_view("pa", mask_centroid_world(spine), 675.0)
    truth = pa.pose(torch.tensor([2.0, -2.0, 3.0, 3.0, -4.0, 5.0], dtype=torch.float64))
    image = render_drr(rendering_volume(nodes.volume_from_node(case.ct_node), "hu"), geometry, truth).numpy()
    xray = nodes.image_to_node(image, nodes.node_ras_from_ijk(case.xray_node), scene, "PA X-ray")
    registration = logic.register(case.ct_node, xray, geometry, segmentation_node=segmentation, method="opt", device="cpu", view="pa")
    estimated = torch.from_numpy(logic.camera_from_world(registration.transform_node))
    assert float(mtre_mm(estimated, truth, target_points(case.vertebrae))) < 1.0
    with pytest.raises(InputError, match="Start view 'sideways'"):
        logic.register(case.ct_node, xray, geometry, segmentation_node=segmentation, method="opt", device="cpu", view="sideways")


def test_a_result_judged_with_instruments_masked_marks_its_transform_node(registered):
    """The attribute's other path: a result whose preparation records a second look's straight instruments
    (``straight_instruments_fraction``, as the engine writes it) marks its transform node, which tells the overlay to
    show label 4; the pose written is the same. Written into new output nodes, removed afterwards."""
    from dataclasses import replace

    scene, case, logic, registration = registered["scene"], registered["case"], registered["logic"], registered["registration"]
    geometry = registration.geometry
    prepared = logic._prepare(case.ct_node, case.xray_node, geometry, registered["segmentation"], None, "bone-bright")
    result = replace(registration.result, xray_preparation={**registration.result.xray_preparation, "straight_instruments_fraction": 0.04})
    drr = np.zeros(logic.drawn_detector(geometry).shape, dtype=np.float32)
    before = _node_ids(scene)
    written = logic._write_nodes(lambda: logic._write_registration(
        case.ct_node, case.xray_node, geometry, prepared, result, drr, None, registered["segmentation"], None, None))
    try:
        assert written.transform_node is not registration.transform_node
        assert written.transform_node.GetAttribute("SOPIRegistration.InstrumentsMasked") == "true"
        assert registration.transform_node.GetAttribute("SOPIRegistration.InstrumentsMasked") == "false"
        np.testing.assert_allclose(nodes.transform_matrix(written.transform_node), nodes.transform_matrix(registration.transform_node), atol=1e-9)
    finally:
        for node_id in set(_node_ids(scene)) - set(before):
            scene.RemoveNode(scene.GetNodeByID(node_id))
    assert _node_ids(scene) == before


def test_a_dicom_xray_nodes_shutters_reach_the_engine_as_its_field_mask(tmp_path):
    """Where ``auto`` reads an X-ray node from its DICOM file, the file's shutters go to the engine too (``sopi
    register --field-mask``), turned as the image is: the registration leaves out what they cover, as ``sopi register``
    on the file does. A node the file does not settle, or a file without shutters, gives none."""
    pytest.importorskip("pydicom")
    from test_dicom_xray import write_dicom

    from sopi.io_xray import read_field_mask, read_xray
    from SOPIRegistrationLib.orientation import xray_orientation
    from SOPIRegistrationLib.reading import FIELD_MASK_FILE, SOURCE_FILE_ATTRIBUTE, file_reading, write_field_mask

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    image = nodes.xray_image_from_node(case.xray_node).astype(np.float64)
    rows, cols = image.shape
    stored = np.round(3500.0 - 3000.0 * image / image.max())  # LOG, sign +1: bone dark
    right = int(0.6 * cols)  # the shutter's right edge: the right 40 % are covered
    tags = {"PixelIntensityRelationship": "LOG", "PixelIntensityRelationshipSign": 1}
    path = write_dicom(tmp_path / "xray.dcm", stored, "DX", "MONOCHROME1", ShutterShape="RECTANGULAR", ShutterLeftVerticalEdge=1,
                       ShutterRightVerticalEdge=right, ShutterUpperHorizontalEdge=1, ShutterLowerHorizontalEdge=rows, **tags)
    node = nodes.image_to_node(stored, nodes.node_ras_from_ijk(case.xray_node), scene, "DICOM X-ray")
    assert file_reading(node) is None  # no file named
    node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(path))
    shutter = file_reading(node).field_mask
    np.testing.assert_array_equal(shutter, read_xray(path).field_mask.numpy())  # what sopi register reads from the file
    assert shutter[:, :right].all() and not shutter[:, right:].any()
    for flip, turned in (("none", shutter), ("left-right", shutter[:, ::-1])):
        folder = tmp_path / flip
        folder.mkdir()
        orientation = xray_orientation(flip)
        assert write_field_mask(folder, shutter, orientation, orientation.geometry(logic_geometry(case)))
        np.testing.assert_array_equal(read_field_mask(folder / FIELD_MASK_FILE, shutter.shape).numpy(), turned)
    plain = write_dicom(tmp_path / "plain.dcm", stored, "DX", "MONOCHROME1", **tags)
    other = nodes.image_to_node(stored, nodes.node_ras_from_ijk(case.xray_node), scene, "unshuttered X-ray")
    other.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(plain))
    assert file_reading(other).field_mask is None and not write_field_mask(tmp_path, None, xray_orientation("none"), logic_geometry(case))
    logic = RegistrationLogic(scene)
    fractions = []
    for xray_node in (other, node):
        registration = logic.register(case.ct_node, xray_node, method="rtpi", device="cpu")
        fractions.append(registration.result.xray_preparation["outside_field_fraction"])
    covered = 1.0 - right / cols
    assert fractions[0] < 0.05 and covered - 0.005 <= fractions[1] < covered + 0.05


def logic_geometry(case):
    """The C-arm geometry the module gives the sample X-ray node."""
    from SOPIRegistrationLib.xray_geometry import geometry_for_xray

    return geometry_for_xray(case.xray_node)


def test_auto_polarity_reads_a_dicom_xray_node_as_its_files_intensity_tags_say(tmp_path):
    """An X-ray node loaded from a DICOM file loses the file's intensity tags; with the file named on the node, ``auto``
    reads the node as ``sopi register`` reads the file (LOG, sign +1: bone dark), the engine is told so instead of
    judging it, the pose is found, and the transform node says where the reading came from. A node holding one frame of
    a cine is read as that frame. A node whose values are not the file's, or that names no file (or a missing one), is
    left to the engine's judgement."""
    pytest.importorskip("pydicom")
    from test_dicom_xray import write_dicom

    from SOPIRegistrationLib.reading import FROM_THE_FILE, SOURCE_FILE_ATTRIBUTE, XRAY_READING_ATTRIBUTE, file_reading

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    spine = case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8))
    segmentation = nodes.segmentation_from_mask(spine, scene, case.ct_node)
    image = nodes.xray_image_from_node(case.xray_node).astype(np.float64)
    stored = np.round(3500.0 - 3000.0 * image / image.max())  # LOG data that grow with intensity: bone dark
    path = write_dicom(tmp_path / "xray.dcm", stored, "DX", "MONOCHROME1", PixelIntensityRelationship="LOG",
                       PixelIntensityRelationshipSign=1)
    node = nodes.image_to_node(stored, nodes.node_ras_from_ijk(case.xray_node), scene, "DICOM X-ray")
    assert file_reading(node) is None  # no file named
    node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(tmp_path / "gone.dcm"))
    assert file_reading(node) is None
    node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(path))
    polarity, reason, _ = file_reading(node)
    assert polarity == "bone-dark" and "LOG" in reason
    edited = nodes.image_to_node(stored[::-1].copy(), nodes.node_ras_from_ijk(case.xray_node), scene, "edited X-ray")
    edited.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(path))
    assert file_reading(edited) is None  # not the values the tags describe
    # Slicer's default DICOM loader (GDCM) shows MONOCHROME1 inverted: read the opposite way, the engine's image up to a constant
    from sopi.io_xray import apply_polarity, read_xray

    displayed = nodes.image_to_node(4095.0 - stored, nodes.node_ras_from_ijk(case.xray_node), scene, "displayed X-ray")
    displayed.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(path))
    reading, reason, _ = file_reading(displayed)
    assert reading == "bone-bright" and "displayed" in reason
    difference = apply_polarity(4095.0 - stored, reading, "x") - read_xray(path).image.numpy()
    np.testing.assert_allclose(difference, difference.flat[0], atol=1e-3)
    # one frame of a cine (a sequence's frame in Slicer): the frame it holds is found; a frame it is not is not
    cine = write_dicom(tmp_path / "cine.dcm", np.stack([stored[::-1], stored]), "XA", "MONOCHROME2", PixelIntensityRelationship="LOG",
                       PixelIntensityRelationshipSign=1)
    node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(cine))
    assert file_reading(node)[0] == "bone-dark"
    edited.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(cine))
    assert file_reading(edited)[0] == "bone-dark"  # the cine's first frame
    shifted = nodes.image_to_node(stored + 7.0, nodes.node_ras_from_ijk(case.xray_node), scene, "shifted X-ray")
    shifted.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(cine))
    assert file_reading(shifted) is None
    node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(path))
    logic = RegistrationLogic(scene)
    registration = logic.register(case.ct_node, node, segmentation_node=segmentation, method="opt", device="cpu")
    transform = registration.transform_node
    assert _mtre(logic, transform, case) < 1.0
    assert "polarity_scores" not in registration.result.xray_preparation  # told, not judged
    assert transform.GetAttribute(XRAY_READING_ATTRIBUTE) == "bone-dark"
    assert transform.GetAttribute(XRAY_READING_ATTRIBUTE + "Source") == FROM_THE_FILE
    from SOPIRegistrationLib.reading import reading_source

    assert reading_source(transform) == FROM_THE_FILE and reading_source(None) is None  # what the module's status line reads
    np.testing.assert_array_equal(nodes.xray_image_from_node(node), stored.astype(np.float32))  # the input is left alone


def test_auto_polarity_lets_the_engine_judge_an_inverted_xray_node_and_keeps_its_reading():
    """The module's default polarity, ``auto``: the sample X-ray stored bone-dark (inverted) goes to the engine as it
    is, the engine's judgement re-reads it and registers the true pose, the reading lands on the transform node, and
    the similarity read-out reads the node that way (the same node read bone-bright correlates negatively)."""
    from SOPIRegistrationLib import settings
    from SOPIRegistrationLib.reading import result_reading, xray_image_as_read

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    spine = case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8))
    segmentation = nodes.segmentation_from_mask(spine, scene, case.ct_node)
    image = nodes.xray_image_from_node(case.xray_node)
    inverted = image.max() - image
    dark_node = nodes.image_to_node(inverted, nodes.node_ras_from_ijk(case.xray_node), scene, "bone-dark X-ray")
    logic = RegistrationLogic(scene)
    registration = logic.register(case.ct_node, dark_node, segmentation_node=segmentation, method="opt", device="cpu")
    transform = registration.transform_node
    assert _mtre(logic, transform, case) < 1.0
    assert registration.result.xray_preparation["polarity"] == "bone-dark"
    assert transform.GetAttribute("SOPIRegistration.XRayReading") == "bone-dark"
    assert transform.GetAttribute("SOPIRegistration.XRayReadingSource").startswith("drr-comparison")
    np.testing.assert_array_equal(nodes.xray_image_from_node(dark_node), inverted)  # the input is left alone
    # read bone-dark, the node is the original X-ray less its minimum
    np.testing.assert_allclose(xray_image_as_read(dark_node, "auto", "bone-dark"), image - image.min(), atol=1e-3)
    parameters = _module_parameters(case, xrayVolume=dark_node, xrayPolarity="auto", outputTransform=transform,
                                    outputDrr=registration.drr_node)
    assert settings.similarities(logic, parameters)[0] > 0.9
    assert logic.similarity(dark_node, registration.drr_node, "bone-bright") < -0.5
    # a polarity the clinician chose is what the node was read as; a two-view result's reading is its first view's
    assert result_reading("bone-dark", {"xray_preparation": {"polarity": "bone-bright"}}) == ("bone-dark", "chosen")
    two_views = {"views": [{"xray_preparation": {"polarity": "intensity", "polarity_source": "drr-comparison over 2 views"}}, {}]}
    assert result_reading("auto", two_views) == ("intensity", "drr-comparison over 2 views")
    assert result_reading("auto", {"xray_preparation": {}}) == ("bone-bright", "as given")
    # read against the image's own cues (the reading they chose explained nothing): the source says so, and the node too
    from SOPIRegistrationLib.reading import AGAINST_THE_CUES, XRAY_READING_ATTRIBUTE, read_against_the_cues

    against = {"xray_preparation": {"polarity": "intensity", "polarity_source": "the registration: ...", "polarity_against_the_cues": True}}
    assert result_reading("auto", against) == ("intensity", AGAINST_THE_CUES)
    assert result_reading("bone-dark", against) == ("bone-dark", "chosen")
    assert not read_against_the_cues(transform) and not read_against_the_cues(None)  # judged by the DRR comparison
    transform.SetAttribute(XRAY_READING_ATTRIBUTE + "Source", AGAINST_THE_CUES)
    assert read_against_the_cues(transform)
