"""``RegistrationLogic``: what the module's buttons do, on MRML nodes, headless.

Every long call has two forms: a blocking one for the Python console and tests, and a
``start_*`` one that returns a :class:`~SOPIRegistrationLib.process.ProcessJob`. Nodes are
read and written to a temporary folder on the calling (main) thread, the engine runs in a
separate process (``python -m sopi ...``, see ``process.py``), and output nodes are written on
the main thread when the job is polled. Short renders (the DRR at a pose, fusion, the
similarity readout) run in this process on the calling thread. Input nodes are never
modified; on an error or a cancel no output node is created or changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sopi.errors import InputError
from sopi.geometry import NOMINAL_VIEWS, CArmGeometry
from sopi.io_xray import XRay, binned_detector
from sopi.xray_orientation import Orientation
from sopi.volume import Volume

from . import frames, nodes
from .xray_geometry import DEFAULT_PRESET, dicom_geometry_settings, geometry_for_xray  # noqa: F401 (the bridge's API)
from .orientation import ORIENTATION_ATTRIBUTE, orientation_between, stored_orientation, xray_orientation
from .inputs import mark_output
from .jobfiles import read_mask, remove_folder, result_from_dict, write_inputs, write_volume
from .reading import FIELD_MASK_FILE, FROM_THE_FILE, XRAY_READING_ATTRIBUTE, file_reading, result_reading, write_field_mask, xray_image_as_read
from .process import ProcessJob, Step, job_folder, python_executable, sopi_command

__all__ = ["DEFAULT_METHOD", "RegistrationLogic", "SceneRegistration", "dicom_geometry_settings", "geometry_for_xray"]

DEFAULT_METHOD = "global+opt"  # sopi.registration.methods.DEFAULT_METHOD; sopi+global+opt once models for this CT exist
ATTRIBUTE_PREFIX = "SOPIRegistration."
#: "true" on a registration's transform when its result was judged in the second look, with straight instruments masked.
INSTRUMENTS_MASKED_ATTRIBUTE = ATTRIBUTE_PREFIX + "InstrumentsMasked"
#: DRR nodes are rendered on the X-ray's detector binned to at most this many pixels on its longest side: a
#: 2560-pixel radiograph's full-size DRR took 40 s and 6 GB (the registration itself bins to 512).
DRR_NODE_MAX_PX = 1024
CT_REFERENCE, XRAY_REFERENCE = ATTRIBUTE_PREFIX + "CT", ATTRIBUTE_PREFIX + "XRay"

Progress = Callable[[float, str], None] | None

#: Stage labels of ``sopi.register``'s progress messages, in a clinician's words.
_STAGE_NAMES = {"rtpi": "RTPI", "fine": "Fine registration", "cma-es": "CMA-ES search", "adam": "Gradient descent",
                "powell": "Powell search"}


def readable_progress(message: str) -> str:
    """``"fine 12/60"`` -> ``"Fine registration 12/60"``; ``"cma-es gc 1/4 3/40"`` -> ``"CMA-ES search (gc, 1/4 detector) 3/40"``."""
    words = message.split()
    if not words or words[0] not in _STAGE_NAMES:
        return message[:1].upper() + message[1:]
    name = _STAGE_NAMES[words[0]]
    if words[0] in ("cma-es", "adam", "powell") and len(words) >= 3:
        return " ".join([f"{name} ({words[1]}, {words[2]} detector)", *words[3:]])
    return " ".join([name, *words[1:]])


@dataclass
class SceneRegistration:
    """A registration written to the scene."""

    result: object  # sopi.registration.RegistrationResult
    transform_node: object
    drr_node: object
    segmentation_node: object | None
    geometry: CArmGeometry
    scene_from_camera: np.ndarray
    second_drr_node: object | None = None  # the second X-ray's DRR (two-view registrations)


@dataclass
class _Prepared:
    ct: Volume
    xray: XRay
    mask: Volume | None
    initial_pose: torch.Tensor | None
    scene_from_camera: np.ndarray


def _matrix_attribute(node, name: str) -> np.ndarray | None:
    text = node.GetAttribute(ATTRIBUTE_PREFIX + name)
    if not text:
        return None
    values = np.array([float(value) for value in text.split()], dtype=np.float64)
    return values.reshape(4, 4) if values.size == 16 else values


def _set_matrix_attribute(node, name: str, values: np.ndarray) -> None:
    node.SetAttribute(ATTRIBUTE_PREFIX + name, " ".join(repr(float(value)) for value in np.asarray(values).ravel()))


def _xray_scene_frame(xray_node, geometry: CArmGeometry, orientation: Orientation = Orientation()) -> np.ndarray:
    """``scene_from_camera`` with the detector where the X-ray node is. With an ``orientation`` the image is read
    turned (:meth:`Orientation.apply`) and ``geometry`` is the turned image's: its pixel ``(c, r)`` lies on the
    node's pixel that :meth:`Orientation.stored_from_turned` gives (a mirrored image's camera faces the node's
    other side)."""
    ras_from_ijk = nodes.node_ras_from_ijk(xray_node) @ orientation.stored_from_turned(geometry.rows, geometry.cols)
    return frames.scene_from_camera_for_xray(ras_from_ijk, geometry.sdd_mm, geometry.principal_point_px)


def _stored_scene_frame(transform_node) -> np.ndarray:
    """The scene frame a registration stored on its transform node, else the camera frame."""
    stored = _matrix_attribute(transform_node, "SceneFromCamera")
    return frames.default_scene_from_camera() if stored is None else stored


class RegistrationLogic:
    """Segmentation, registration and DRR rendering on the nodes of ``scene``.

    Args:
        scene: the ``vtkMRMLScene`` (in Slicer, the application's scene).
        models_dir: where the default models live (the shipped ``Resources/Models``).
    """

    def __init__(self, scene, models_dir: str | Path | None = None) -> None:
        from sopi.sample_data import models_dir as shipped_models

        self.scene = scene
        self.models_dir = Path(models_dir) if models_dir is not None else shipped_models()
        self._rendering_cache: tuple | None = None
        #: where job folders go (None: the system's temporary folder; the module uses Slicer's)
        self.temporary_root: str | Path | None = None

    # ------------------------------------------------------------------ models

    def default_models(self, folder: str | Path | None = None) -> dict[str, Path]:
        """The model files used when none is given: ``{"rtpi": ..., "fine": ...}`` in ``folder``
        (default :attr:`models_dir`)."""
        folder = Path(folder) if folder is not None else self.models_dir
        return {"rtpi": folder / "rtpi_sample_ct.pt", "fine": folder / "fine_sample_ct.pt"}

    def model_warnings(self, ct_node, model_files: dict[str, str | Path | None] | None = None) -> list[str]:
        """Human-readable warnings for models that were trained on another CT than ``ct_node``'s."""
        from sopi.nets.shipped import other_ct_warning

        ct = nodes.volume_from_node(ct_node)
        found = (other_ct_warning(path, ct, kind) for kind, path in (model_files or self.default_models()).items() if path)
        return [warning for warning in found if warning is not None]

    def prepare_models(self, ct_node, segmentation_node, geometry: CArmGeometry, out_dir: str | Path,
                       minutes: float = 5.0, device: str = "auto", progress: Progress = None,
                       cancel: Callable[[], bool] | None = None, seed: int = 0) -> dict[str, Path]:
        """Train patient-specific models (blocking); see :meth:`start_prepare_models`."""
        job = self.start_prepare_models(ct_node, segmentation_node, geometry, out_dir, minutes, device, on_progress=progress, seed=seed)
        return job.wait(cancel=cancel)

    def start_prepare_models(self, ct_node, segmentation_node, geometry: CArmGeometry, out_dir: str | Path,
                             minutes: float = 5.0, device: str = "auto", on_progress=None, on_done=None,
                             on_error=None, *, seed: int = 0) -> ProcessJob:
        """Fine-tune RTPI and the fine module from the shipped population models on this CT and spine for
        ``geometry``'s C-arm, in a separate process (``train_runner.py``), as ``sopi prepare`` does
        (:func:`sopi.training.prepare.prepare_models`). The job's result is ``{"rtpi": path, "fine": path}``."""
        if segmentation_node is None:
            raise InputError("Prepare model: select or create the spine segmentation first (Auto-segment spine)")
        if not minutes > 0:
            raise InputError(f"Prepare model: training time must be positive minutes, got {minutes}")
        ct = nodes.volume_from_node(ct_node)
        mask = nodes.mask_from_segmentation(segmentation_node, ct_node)
        name = re.sub(r"[^A-Za-z0-9_-]", "_", ct_node.GetName()) or "ct"
        folder = job_folder(self.temporary_root)
        try:
            write_volume(folder / "ct.mha", ct)
            write_volume(folder / "mask.mha", mask)
            geometry.save(folder / "geometry.json")
        except BaseException:
            remove_folder(folder)
            raise
        command = [python_executable(), "-m", "SOPIRegistrationLib.train_runner", "--ct", "ct.mha", "--mask", "mask.mha",
                   "--geometry", "geometry.json", "--out", str(Path(out_dir).resolve()), "--minutes", repr(float(minutes)),
                   "--name", name, "--device", device, "--seed", str(int(seed)), "--result", "models.json"]

        def finish(folder: Path) -> dict[str, Path]:
            return {kind: Path(path) for kind, path in json.loads((folder / "models.json").read_text(encoding="utf-8")).items()}

        return ProcessJob([Step(command)], folder, finish, on_progress, on_done, on_error, "Prepare model").start()

    # ------------------------------------------------------------------ segmentation

    def segment_spine(self, ct_node, segmentation_node=None, progress: Progress = None, cancel=None):
        """Segment the spine of a CT node (blocking); returns the segmentation node."""
        return self.start_segment_spine(ct_node, segmentation_node, on_progress=progress).wait(cancel=cancel)

    def start_segment_spine(self, ct_node, segmentation_node=None, on_progress=None, on_done=None, on_error=None) -> ProcessJob:
        """Spine segmentation in a separate process (``sopi segment``); the job's result is the
        segmentation node (``segmentation_node`` updated, or a new one)."""
        ct = nodes.volume_from_node(ct_node)
        folder = write_inputs(self.temporary_root, ct)
        name = f"{ct_node.GetName()} spine"

        def finish(folder: Path):
            mask = read_mask(folder / "mask.mha", ct)
            return self._write_nodes(lambda: nodes.segmentation_from_mask(mask, self.scene, ct_node, name, segmentation_node))

        step = Step(sopi_command("segment", "ct.mha", "--out", "mask.mha"), describe=lambda m: f"Segmenting spine ({m})")
        return ProcessJob([step], folder, finish, on_progress, on_done, on_error, "Segmentation").start()

    # ------------------------------------------------------------------ registration

    def register(self, ct_node, xray_node, geometry: CArmGeometry | None = None, segmentation_node=None,
                 init_transform_node=None, method: str = DEFAULT_METHOD, device: str = "auto", transform_node=None,
                 drr_node=None, progress: Progress = None, cancel: Callable[[], bool] | None = None,
                 **options) -> SceneRegistration:
        """Register (blocking); see :meth:`start_register` for the arguments."""
        job = self.start_register(
            ct_node, xray_node, geometry, segmentation_node, init_transform_node, method, device, transform_node,
            drr_node, on_progress=progress, **options,
        )
        return job.wait(cancel=cancel)

    def start_register(self, ct_node, xray_node, geometry: CArmGeometry | None = None, segmentation_node=None,
                       init_transform_node=None, method: str = DEFAULT_METHOD, device: str = "auto",
                       transform_node=None, drr_node=None, on_progress=None, on_done=None, on_error=None, *,
                       model: str | Path | None = None, fine_model: str | Path | None = None, seed: int = 0,
                       polarity: str = "auto", step_mm: float = 1.0, iteration_scale: float = 1.0,
                       pyramid: bool = True, second_xray_node=None, second_geometry: CArmGeometry | None = None,
                       second_drr_node=None, flip: str = "none", view: str = "ap") -> ProcessJob:
        """Register an X-ray node to a CT node in the background.

        Args:
            geometry: the X-ray's C-arm; default :func:`geometry_for_xray` with the
                ``perlove-plx118f`` distances and the node's pixel spacing.
            segmentation_node: the spine; without it, methods that need one segment it
                first (and the job creates a segmentation node).
            init_transform_node: start pose (a transform node in this module's convention,
                ``docs/conventions.md``); default the nominal ``view`` about the spine.
            view: without ``init_transform_node``, the nominal view to start from
                (:data:`sopi.geometry.NOMINAL_VIEWS`: ``ap``, ``pa`` or ``lateral``).
            transform_node, drr_node: outputs to update; new nodes are created if None.
            model, fine_model: network files; default :meth:`default_models`.
            polarity: how bone looks in the X-ray node (``bone-bright``, ``bone-dark`` or ``intensity``:
                applied before the engine sees the image), or ``auto``: as the DICOM files' intensity tags say where
                every X-ray node names its file and still holds its values (:func:`.reading.file_reading`), else the
                engine judges it against a DRR of the CT and, where that leaves it open and the result is flagged,
                tries the other readings (as ``sopi register`` does); the reading registered with is kept on the
                transform node (:data:`.reading.XRAY_READING_ATTRIBUTE`).
            seed, step_mm, iteration_scale, pyramid: as in :func:`sopi.register`.
            flip: what the X-ray node's image is against the C-arm's convention
                (:data:`.orientation.XRAY_ORIENTATIONS`, ``docs/conventions.md``): ``none``, mirrored ``left-right``,
                ``up-down`` or ``both``, turned 90 deg (``rotated-cw``, ``rotated-ccw``) or mirrored across a
                diagonal (``diagonal``, ``anti-diagonal``). The engine
                registers the image turned back; the DRR node is drawn turned the same way, so it lies
                over the X-ray node, and the transform node keeps the orientation for the pose sliders.
            second_xray_node: a second X-ray of the patient (a lateral, say) registered jointly
                (:func:`sopi.register_views`, classical methods and ``global+opt``); its
                ``second_geometry`` carries ``view_from_reference`` (default: the C-arm turned
                from the first shot to the nominal lateral, :mod:`.second_view`); its DRR goes
                to ``second_drr_node`` (new if None).
        The job's result is a :class:`SceneRegistration`.
        """
        from sopi.registration.methods import get_method, needs_mask, needs_model

        get_method(method)
        if not step_mm > 0 or not iteration_scale > 0:
            raise InputError(f"Register: the ray step ({step_mm}) and the iteration scale ({iteration_scale}) must be positive")
        geometry = geometry or geometry_for_xray(xray_node)
        orientation = xray_orientation(flip)
        if view not in NOMINAL_VIEWS:
            raise InputError(f"Start view {view!r} is not one of {NOMINAL_VIEWS}")
        if orientation.changes and second_xray_node is not None:
            raise InputError("X-ray orientation: turning a mirrored X-ray works with one X-ray; register the two views as stored")
        # under auto, X-rays whose DICOM files' intensity tags settle how to read them are read so, as sopi register would
        views = [node for node in (xray_node, second_xray_node) if node is not None]
        settled = [file_reading(node) for node in views] if polarity == "auto" else []
        readings = [one.polarity for one in settled] if settled and all(settled) else [polarity] * len(views)
        prepared = self._prepare(ct_node, xray_node, geometry, segmentation_node, init_transform_node, readings[0], orientation)
        geometry = prepared.xray.geometry  # the image as registered (turned back where it was mirrored)
        second = None
        if second_xray_node is not None:
            from . import second_view

            view_arguments = second_view.engine_arguments(method)
            second_geometry = second_geometry or second_view.second_view_geometry(geometry, geometry_for_xray(second_xray_node), -90.0)
            second = self._prepare(ct_node, second_xray_node, second_geometry, None, None, readings[1]).xray
            model = fine_model = None  # the learned methods register one view: no networks to pass
        needed = needs_model(method)
        defaults = self.default_models()
        models = {"rtpi": model or (defaults["rtpi"] if "rtpi" in needed else None),
                  "fine": fine_model or (defaults["fine"] if "fine" in needed else None)}
        # without a segmentation, a method that needs the spine segments it in the engine's process and writes it back
        auto_mask = prepared.mask is None and needs_mask(method)
        folder = write_inputs(self.temporary_root, prepared.ct, prepared.mask, prepared.xray, prepared.initial_pose)
        if second is not None:
            second_view.write_second_xray(folder, second)
        # one X-ray read from its file: the file's shutters too (sopi register takes one view's)
        shutter = second is None and readings[0] != polarity and write_field_mask(folder, settled[0].field_mask, orientation, prepared.xray.geometry)
        # a polarity the clinician or the file chose is applied (bone bright, settled); else the engine judges the image as given
        engine_polarity = "auto" if readings[0] == "auto" else "bone-bright"
        arguments = ["register", "--ct", "ct.mha", "--xray", "xray.mha", "--polarity", engine_polarity, "--geometry", "geometry.json", "--method", method,
                     "--device", device, "--seed", str(int(seed)), "--iteration-scale", repr(float(iteration_scale)),
                     "--step-mm", repr(float(step_mm)),
                     "--out", "result.json"]
        arguments += ["--init", "init.json"] if prepared.initial_pose is not None else ["--view", view]
        arguments += ["--mask", "mask.mha"] if prepared.mask is not None else ["--mask-out", "mask.mha"] if auto_mask else []
        arguments += [] if pyramid else ["--no-pyramid"]
        arguments += ["--field-mask", FIELD_MASK_FILE] if shutter else []
        arguments += view_arguments if second is not None else []
        for option, path in (("--model", models["rtpi"]), ("--fine-model", models["fine"])):
            arguments += [option, str(Path(path).resolve())] if path else []
        steps = [Step(sopi_command(*arguments), 1.0, readable_progress)]

        def finish(folder: Path) -> SceneRegistration:
            from sopi.render import render_drr

            data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
            result = result_from_dict(data)  # two views: the confidence is the lowest view's
            reading = (readings[0], FROM_THE_FILE) if readings[0] != polarity else result_reading(polarity, data)
            new_mask = read_mask(folder / "mask.mha", prepared.ct) if auto_mask else None
            # the DRR the clinician compares: from the CT at its own resolution
            drr = render_drr(self._rendering_volume(ct_node), self.drawn_detector(geometry), result.camera_from_world, step_mm=step_mm).numpy()
            if second is None:
                return self._write_nodes(lambda: self._write_registration(
                    ct_node, xray_node, geometry, prepared, result, drr, new_mask, segmentation_node, transform_node, drr_node, flip,
                    reading,
                ))
            second_pose = torch.from_numpy(second_view.second_view_pose(data))
            second_drr = render_drr(self._rendering_volume(ct_node), self.drawn_detector(second.geometry), second_pose, step_mm=step_mm).numpy()

            def write_both() -> SceneRegistration:
                written = self._write_registration(ct_node, xray_node, geometry, prepared, result, drr, new_mask, segmentation_node,
                                                   transform_node, drr_node, reading=reading)
                second_view.store_second_view(written.transform_node, second.geometry, data, second_xray_node)  # the sliders move both
                written.second_drr_node = self._drr_to_node(second_drr, second.geometry, _xray_scene_frame(second_xray_node, second.geometry),
                                                            second_drr_node, f"{second_xray_node.GetName()} DRR")
                return written

            return self._write_nodes(write_both)

        return ProcessJob(steps, folder, finish, on_progress, on_done, on_error, "Registration").start()

    def _prepare(self, ct_node, xray_node, geometry, segmentation_node, init_transform_node, polarity,
                 orientation: Orientation = Orientation()) -> _Prepared:
        ct = nodes.volume_from_node(ct_node)
        image = xray_image_as_read(xray_node, polarity)  # under auto, as it is: the engine judges it
        if image.shape != geometry.shape:
            raise InputError(f"X-ray: {xray_node.GetName()!r} is {image.shape} pixels but the geometry describes {geometry.shape}")
        geometry = orientation.geometry(geometry)
        xray = XRay(orientation.apply(torch.from_numpy(image.astype(np.float32))), geometry, xray_node.GetName())
        mask = nodes.mask_from_segmentation(segmentation_node, ct_node) if segmentation_node is not None else None
        scene_from_camera = _xray_scene_frame(xray_node, geometry, orientation)
        initial_pose = None
        if init_transform_node is not None:
            initial_pose = torch.from_numpy(
                frames.camera_from_world_from_transform(nodes.transform_matrix(init_transform_node), scene_from_camera)
            )
        return _Prepared(ct, xray, mask, initial_pose, scene_from_camera)

    def _write_nodes(self, write: Callable):
        """Run ``write``; if it fails, remove the nodes it added so the scene is as it was."""
        before = {self.scene.GetNthNode(index).GetID() for index in range(self.scene.GetNumberOfNodes())}
        try:
            return write()
        except BaseException:
            added = [self.scene.GetNthNode(index) for index in range(self.scene.GetNumberOfNodes())]
            for node in added:
                if node is not None and node.GetID() not in before:
                    self.scene.RemoveNode(node)
            raise

    def _write_registration(self, ct_node, xray_node, geometry, prepared, result, drr, new_mask, segmentation_node,
                            transform_node, drr_node, flip: str = "none",
                            reading: tuple[str, str] = ("bone-bright", "chosen")) -> SceneRegistration:
        if new_mask is not None:
            found = "bone (no spine found)" if result.mask_source == "bone" else "spine"  # the engine's fallback: every bone
            segmentation_node = nodes.segmentation_from_mask(new_mask, self.scene, ct_node, f"{ct_node.GetName()} {found}")
        if transform_node is None:
            transform_node = self.scene.AddNewNodeByClass(
                "vtkMRMLLinearTransformNode", self.scene.GenerateUniqueName(f"{xray_node.GetName()} registration")
            )
        registered = frames.transform_from_camera_from_world(result.camera_from_world.numpy(), prepared.scene_from_camera)
        nodes.set_transform_matrix(transform_node, registered)
        _set_matrix_attribute(transform_node, "RegisteredMatrix", registered)
        _set_matrix_attribute(transform_node, "SceneFromCamera", prepared.scene_from_camera)
        _set_matrix_attribute(transform_node, "PivotLPS", result.pivot_world.numpy())
        transform_node.SetAttribute(ATTRIBUTE_PREFIX + "Geometry", json.dumps(geometry.to_dict()))
        transform_node.SetAttribute(ORIENTATION_ATTRIBUTE, flip)
        transform_node.SetAttribute(XRAY_READING_ATTRIBUTE, reading[0])  # how the X-ray node's values were read
        transform_node.SetAttribute(XRAY_READING_ATTRIBUTE + "Source", reading[1])
        transform_node.SetAttribute(ATTRIBUTE_PREFIX + "Method", result.method)
        transform_node.SetAttribute(ATTRIBUTE_PREFIX + "Similarity", repr(float(result.similarity)))
        transform_node.SetAttribute(ATTRIBUTE_PREFIX + "TimeS", f"{result.time_s:.3f}")
        transform_node.SetAttribute(ATTRIBUTE_PREFIX + "Confidence", f"{result.confidence:.4f}")
        transform_node.SetAttribute(ATTRIBUTE_PREFIX + "LikelyFailed", str(bool(result.likely_failed)).lower())
        second_look = "straight_instruments_fraction" in result.xray_preparation  # judged with the instruments masked
        transform_node.SetAttribute(INSTRUMENTS_MASKED_ATTRIBUTE, str(second_look).lower())
        transform_node.SetNodeReferenceID(CT_REFERENCE, ct_node.GetID())
        transform_node.SetNodeReferenceID(XRAY_REFERENCE, xray_node.GetID())
        from .second_view import forget_second_view

        forget_second_view(transform_node)  # a two-view registration stores its second view again afterwards
        drr_node = self._drr_to_node(drr, geometry, prepared.scene_from_camera, drr_node, f"{xray_node.GetName()} DRR")
        return SceneRegistration(result, transform_node, drr_node, segmentation_node, geometry, prepared.scene_from_camera)

    @staticmethod
    def drawn_detector(geometry: CArmGeometry, binning: int = 1) -> CArmGeometry:
        """The detector a DRR node is rendered on: ``geometry`` binned to at most :data:`DRR_NODE_MAX_PX` pixels,
        then by ``binning`` (coarser while a pose slider is dragged)."""
        geometry = binned_detector(geometry, DRR_NODE_MAX_PX)[0]
        return geometry if binning <= 1 else geometry.resized(max(1, geometry.rows // binning), max(1, geometry.cols // binning))

    def _drr_to_node(self, drr: np.ndarray, geometry: CArmGeometry, scene_from_camera: np.ndarray, drr_node, name: str):
        if drr.shape != geometry.shape:  # rendered on fewer pixels (DRR_NODE_MAX_PX, dragging): the same physical detector
            geometry = geometry.resized(*drr.shape)
        ras_from_ijk = frames.detector_ras_from_ijk(scene_from_camera, geometry.sdd_mm, geometry.pixel_spacing_mm, geometry.principal_point_px)
        return mark_output(nodes.image_to_node(drr.astype(np.float32), ras_from_ijk, self.scene, name, drr_node))

    # ------------------------------------------------------------------ poses and DRRs

    def registration_geometry(self, transform_node) -> tuple[CArmGeometry, np.ndarray]:
        """The geometry and ``scene_from_camera`` a registration stored on its transform node."""
        text = transform_node.GetAttribute(ATTRIBUTE_PREFIX + "Geometry")
        scene_from_camera = _matrix_attribute(transform_node, "SceneFromCamera")
        if not text or scene_from_camera is None:
            raise InputError(f"{transform_node.GetName()!r} holds no SOPIRegistration result; register first")
        return CArmGeometry.from_dict(json.loads(text), source=transform_node.GetName()), scene_from_camera

    def camera_from_world(self, transform_node, scene_from_camera: np.ndarray | None = None) -> np.ndarray:
        """The engine's ``camera_from_world`` of a transform node (its stored scene frame by default)."""
        if scene_from_camera is None:
            scene_from_camera = _stored_scene_frame(transform_node)
        return frames.camera_from_world_from_transform(nodes.transform_matrix(transform_node), scene_from_camera)

    def pose_params(self, transform_node) -> np.ndarray:
        """The paper's parameters (deg, mm) of the node's current pose relative to the registered one."""
        _, reference, scene_from_camera, pivot = self._registered(transform_node)
        return frames.params_from_pose(reference, pivot, self.camera_from_world(transform_node, scene_from_camera))

    def set_pose_params(self, transform_node, theta) -> None:
        """Move the node to the registered pose plus ``theta`` (deg, mm; about the spine centroid)."""
        _, reference, scene_from_camera, pivot = self._registered(transform_node)
        pose = frames.pose_from_params(reference, pivot, np.asarray(theta, dtype=np.float64))
        nodes.set_transform_matrix(transform_node, frames.transform_from_camera_from_world(pose, scene_from_camera))

    def set_pose_param(self, transform_node, index: int, value: float) -> None:
        """Change one of the six parameters (a pose slider); the others keep the node's current values."""
        theta = self.pose_params(transform_node)
        theta[index] = float(value)
        self.set_pose_params(transform_node, theta)

    def reset_pose(self, transform_node) -> None:
        """Back to the registered pose."""
        nodes.set_transform_matrix(transform_node, self._registered(transform_node)[0])

    def _registered(self, transform_node) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The registered transform matrix, its ``camera_from_world``, the scene frame and the pivot (LPS mm)."""
        registered = _matrix_attribute(transform_node, "RegisteredMatrix")
        pivot = _matrix_attribute(transform_node, "PivotLPS")
        _, scene_from_camera = self.registration_geometry(transform_node)
        if registered is None or pivot is None:
            raise InputError(f"{transform_node.GetName()!r} holds no SOPIRegistration result; register first")
        reference = frames.camera_from_world_from_transform(registered, scene_from_camera)
        return registered, reference, scene_from_camera, pivot

    def _rendering_volume(self, ct_node) -> Volume:
        from sopi.render import rendering_volume

        # the CT's own grid (its parent transform, which the module sets to place it, does not matter)
        key = (ct_node.GetID(), ct_node.GetImageData().GetMTime(), tuple(nodes.own_ras_from_ijk(ct_node).ravel()))
        if self._rendering_cache is None or self._rendering_cache[0] != key:
            self._rendering_cache = (key, rendering_volume(nodes.volume_from_node(ct_node), "hu"))
        return self._rendering_cache[1]

    def render_drr(self, ct_node, transform_node, geometry: CArmGeometry | None = None, drr_node=None, xray_node=None,
                   binning: int = 1, step_mm: float = 1.0, device: str = "cpu"):
        """Render the DRR of ``ct_node`` at ``transform_node``'s pose into ``drr_node`` (new if None).

        The detector (and so the DRR node) sits where ``xray_node`` is; without it, where the
        transform node's registration put it, or in the camera frame (source at the origin).
        ``binning`` > 1 renders a coarser detector (for interactive dragging)."""
        if geometry is None:
            geometry = self.registration_geometry(transform_node)[0]
        if xray_node is not None:
            scene_from_camera = _xray_scene_frame(xray_node, geometry, stored_orientation(transform_node))
        else:
            scene_from_camera = _stored_scene_frame(transform_node)
        pose = torch.from_numpy(self.camera_from_world(transform_node, scene_from_camera))
        geometry = self.drawn_detector(geometry, binning)
        from sopi.render import render_drr

        volume = self._rendering_volume(ct_node)
        image = render_drr(volume, geometry, pose, step_mm=step_mm * max(1, binning), device=device)
        name = f"{(xray_node if xray_node is not None else transform_node).GetName()} DRR"
        return self._drr_to_node(image.numpy(), geometry, scene_from_camera, drr_node, name)

    def similarity(self, xray_node, drr_node, polarity: str = "auto", reading: str | None = None) -> float:
        """Gradient correlation (in [-1, 1], higher is better) of the X-ray and a DRR node (resampled to the DRR's size);
        the X-ray read as :func:`.reading.xray_image_as_read` says (under ``auto``, as the registration read it:
        ``reading``)."""
        from sopi.io_xray import resize_image
        from sopi.similarity import gradient_correlation

        xray = xray_image_as_read(xray_node, polarity, reading)
        drr = torch.from_numpy(nodes.xray_image_from_node(drr_node)).to(torch.float64)
        drr = orientation_between(xray_node, drr_node).undo(drr)  # a DRR drawn for a turned X-ray, back to the X-ray's pixels

        fixed = resize_image(torch.from_numpy(xray), tuple(drr.shape)).to(torch.float64)
        return float(gradient_correlation(fixed[None], drr[None]))
