"""What the module's buttons start, read from its parameter node (headless).

``parameters`` is any object with the fields of ``SOPIRegistrationParameterNode`` (the module's
parameter-node wrapper in Slicer, a ``types.SimpleNamespace`` in the tests), so the tests run
the very calls the module makes.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["geometry", "is_set", "model_files", "model_warnings", "second_geometry", "start_prepare_models", "start_register", "store_registration"]


def is_set(path) -> bool:
    """A path parameter that holds a path (the wrapper reads an empty one as ``Path(".")``)."""
    return path is not None and str(path) not in ("", ".")


def geometry(parameters):
    """The X-ray's C-arm geometry from the Inputs section."""
    from .logic import geometry_for_xray

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
    from .logic import geometry_for_xray
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
