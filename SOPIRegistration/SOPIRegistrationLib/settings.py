"""What the module's buttons start, read from its parameter node (headless).

``parameters`` is any object with the fields of ``SOPIRegistrationParameterNode`` (the module's
parameter-node wrapper in Slicer, a ``types.SimpleNamespace`` in the tests), so the tests run
the very calls the module makes.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "geometry", "is_set", "model_files", "model_warnings", "render_pose_drrs", "second_geometry", "show_results", "similarities",
    "start_prepare_models", "start_register", "store_registration", "two_views", "view_confidences",
]


def is_set(path) -> bool:
    """A path parameter that holds a path (the wrapper reads an empty one as ``Path(".")``)."""
    return path is not None and str(path) not in ("", ".")


def geometry(parameters):
    """The X-ray's C-arm geometry from the Inputs section."""
    from .xray_geometry import geometry_for_xray

    return geometry_for_xray(parameters.xrayVolume, parameters.geometryPreset, parameters.sourceToDetectorMm,
                             parameters.pixelSpacingMm or None, parameters.sourceToIsocenterMm)


def model_files(lib, parameters) -> dict:
    """``{"rtpi": path, "fine": path}``: the chosen files, else those of the model folder, else the shipped ones."""
    models = lib.default_models(parameters.modelFolder if is_set(parameters.modelFolder) else None)
    for kind, chosen in (("rtpi", parameters.rtpiModel), ("fine", parameters.fineModel)):
        if is_set(chosen):
            models[kind] = Path(chosen)
    return models


def model_warnings(lib, parameters) -> list[str]:
    """Warnings for the networks the chosen method would use (none for classical methods)."""
    from sopi.registration.methods import needs_model

    needed = needs_model(parameters.method)
    models = {kind: path for kind, path in model_files(lib, parameters).items() if kind in needed}
    return lib.model_warnings(parameters.ctVolume, models) if models else []


def second_geometry(parameters, first):
    """The second X-ray's geometry (``None`` without a second X-ray): its geometry file, else the
    first's distances on its own detector, placed by the C-arm turn between the shots."""
    second = getattr(parameters, "secondXrayVolume", None)
    if second is None:
        return None
    from .xray_geometry import geometry_for_xray
    from .second_view import second_view_geometry

    detector = geometry_for_xray(second, parameters.geometryPreset, parameters.sourceToDetectorMm, parameters.pixelSpacingMm or None,
                                 parameters.sourceToIsocenterMm)
    path = getattr(parameters, "secondGeometryFile", None)
    return second_view_geometry(first, detector, getattr(parameters, "secondViewTurnDeg", -90.0), path if is_set(path) else None)


def start_register(lib, parameters, on_progress=None, on_done=None, on_error=None):
    """Start a registration with the parameter node's settings, into its output nodes (new ones if unset);
    with a second X-ray, both views jointly."""
    models = model_files(lib, parameters)
    first = geometry(parameters)
    return lib.start_register(
        parameters.ctVolume, parameters.xrayVolume, first, parameters.spineSegmentation,
        parameters.initialTransform, parameters.method, parameters.device, parameters.outputTransform, parameters.outputDrr,
        on_progress, on_done, on_error, model=models["rtpi"], fine_model=models["fine"], seed=parameters.seed,
        polarity=parameters.xrayPolarity, step_mm=parameters.rayStepMm, iteration_scale=parameters.iterationScale,
        pyramid=parameters.pyramid, second_xray_node=getattr(parameters, "secondXrayVolume", None),
        second_geometry=second_geometry(parameters, first), second_drr_node=getattr(parameters, "secondOutputDrr", None),
        flip=getattr(parameters, "xrayFlip", "none"), view=getattr(parameters, "startView", "ap"),
    )


def store_registration(parameters, registration) -> None:
    """Keep a finished registration's nodes in the parameter node (the next Register reuses them)."""
    parameters.outputTransform = registration.transform_node
    parameters.outputDrr = registration.drr_node
    if getattr(registration, "second_drr_node", None) is not None:
        parameters.secondOutputDrr = registration.second_drr_node
    if registration.segmentation_node is not None:
        parameters.spineSegmentation = registration.segmentation_node


def start_prepare_models(lib, parameters, default_folder, on_progress=None, on_done=None, on_error=None):
    """Start patient-specific training; the models go to the model folder, else ``default_folder``."""
    folder = str(parameters.modelFolder) if is_set(parameters.modelFolder) else str(default_folder)
    return lib.start_prepare_models(parameters.ctVolume, parameters.spineSegmentation, geometry(parameters), folder,
                                    parameters.trainingMinutes, parameters.device, on_progress, on_done, on_error,
                                    seed=parameters.seed)


# --------------------------------------------------------------------------- display: both views follow the pose


def two_views(parameters) -> bool:
    """Whether the output transform holds a two-view registration and its second X-ray is selected."""
    from .second_view import has_second_view

    return getattr(parameters, "secondXrayVolume", None) is not None and has_second_view(parameters.outputTransform)


def render_pose_drrs(lib, parameters, binning: int = 1, device: str = "cpu") -> None:
    """The DRRs at the output transform's current pose (the pose sliders'): the first X-ray's into
    ``outputDrr`` and, after a two-view registration, the second's into ``secondOutputDrr``
    (its pose follows the first's through ``view_from_reference``); new nodes where unset."""
    drr = lib.render_drr(parameters.ctVolume, parameters.outputTransform, drr_node=parameters.outputDrr, xray_node=parameters.xrayVolume,
                         binning=binning, step_mm=parameters.rayStepMm, device=device)
    if parameters.outputDrr is not drr:
        parameters.outputDrr = drr
    if two_views(parameters):
        from .second_view import render_second_drr

        second = render_second_drr(lib, parameters.ctVolume, parameters.outputTransform, parameters.secondXrayVolume,
                                   parameters.secondOutputDrr, binning=binning, step_mm=parameters.rayStepMm, device=device)
        if parameters.secondOutputDrr is not second:
            parameters.secondOutputDrr = second


def show_results(lib, scene, parameters) -> dict:
    """Fuse each DRR over its X-ray (the first in the red view, the second in the yellow one), place
    the CT and spine in the C-arm's frame and draw each C-arm's principal ray in 3D (the second's
    where it stood relative to the first; hidden without a second view). Returns the display nodes
    to keep as parameter-node references: ``{field: node}`` (``None`` where there is none)."""
    from . import display

    fusion = display.show_fusion(scene, parameters.xrayVolume, parameters.outputDrr, parameters.foregroundOpacity,
                                 parameters.fusionMode, parameters.fusionImage)
    display.place_in_carm(parameters.outputTransform, [parameters.ctVolume, parameters.spineSegmentation], parameters.placeCtInCarm)
    geometry, scene_from_camera = lib.registration_geometry(parameters.outputTransform)
    shown = {"fusionImage": fusion, "carmMarker": display.show_carm(scene, scene_from_camera, geometry.sdd_mm, parameters.carmMarker)}
    second_marker = getattr(parameters, "secondCarmMarker", None)
    if two_views(parameters):
        from .second_view import second_scene_from_camera, stored_second_view

        if parameters.secondOutputDrr is not None:
            display.show_fusion(scene, parameters.secondXrayVolume, parameters.secondOutputDrr, parameters.foregroundOpacity,
                                layouts=("Yellow",))
        second_geometry, _ = stored_second_view(parameters.outputTransform)
        second_marker = display.show_carm(scene, second_scene_from_camera(lib, parameters.outputTransform), second_geometry.sdd_mm,
                                          second_marker, "C-arm principal ray, second X-ray")
        _set_visible(second_marker, True)
    elif second_marker is not None:
        _set_visible(second_marker, False)  # kept for the next two-view registration
    shown["secondCarmMarker"] = second_marker
    from .logic import INSTRUMENTS_MASKED_ATTRIBUTE
    from .reading import registered_reading

    instruments = parameters.outputTransform.GetAttribute(INSTRUMENTS_MASKED_ATTRIBUTE) == "true"
    shown["xrayMaskLabel"] = display.show_xray_mask(scene, parameters.xrayVolume, parameters.xrayMaskLabel, parameters.showXrayMask,
                                                    polarity=parameters.xrayPolarity, instruments=instruments,
                                                    reading=registered_reading(parameters.outputTransform))
    return shown


def _set_visible(node, visible: bool) -> None:
    shown = node.GetDisplayNode()
    if shown is not None:
        shown.SetVisibility(bool(visible))


def similarities(lib, parameters) -> list[float]:
    """Gradient correlation of each X-ray and its DRR: the first, and the second after a two-view registration."""
    from .reading import registered_reading

    reading = registered_reading(parameters.outputTransform)  # under auto: as the registration read the X-rays
    values = [lib.similarity(parameters.xrayVolume, parameters.outputDrr, parameters.xrayPolarity, reading)]
    if two_views(parameters) and parameters.secondOutputDrr is not None:
        values.append(lib.similarity(parameters.secondXrayVolume, parameters.secondOutputDrr, parameters.xrayPolarity, reading))
    return values


def view_confidences(result) -> list[float]:
    """Each X-ray's confidence in a two-view result (the result's own is the lowest); empty for one view."""
    return [float(view["confidence"]) for view in (getattr(result, "confidence_details", None) or {}).get("views", [])]
