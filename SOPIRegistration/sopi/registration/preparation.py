"""The X-ray as registration sees it: polarity decided, unexplainable pixels masked and filled."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..io_xray import XRay, resize_image
from ..volume import Volume

__all__ = ["prepare_fixed"]

#: Detector edge (pixels) at which polarity is judged: only the body's coarse shape matters.
_POLARITY_PX = 64
#: The DRR that polarity is judged against covers this many detector widths and heights.
_POLARITY_EXTENT = 3
#: The image is re-read with another polarity only when that reading correlates at least this much better.
_POLARITY_MARGIN = 0.2


def prepare_fixed(
    xray: XRay, attenuation: Volume, initial_pose: torch.Tensor, device: torch.device
) -> tuple[XRay, torch.Tensor, dict]:
    """``(xray with the prepared image, weight (rows, cols), record for the result JSON)``.

    A polarity that neither the caller nor the file's tags settled (``metadata["polarity_settled"]``
    false or absent, as for images made in memory) is judged against a coarse DRR at
    ``initial_pose`` on a detector three times as wide and high, searched over every placement
    of the X-ray (the start may be far from where it was taken); the image is re-read when
    another reading matches clearly better (:func:`sopi.xray_prep.detect_polarity`).
    """
    from ..render import render_drr
    from ..xray_prep import apply_reading, detect_polarity, prepare_xray

    image = xray.image
    record: dict = {}
    field_mask = xray.field_mask
    if not xray.metadata.get("polarity_settled", False):
        rows, cols = xray.geometry.shape
        scale = max(1, round(max(rows, cols) / _POLARITY_PX))
        small = (-(-rows // scale), -(-cols // scale))
        working = xray.geometry.resized(*small)
        grow_cols, grow_rows = (_POLARITY_EXTENT - 1) * working.cols // 2, (_POLARITY_EXTENT - 1) * working.rows // 2
        drr = render_drr(attenuation, working.padded(grow_cols, grow_rows, grow_cols, grow_rows), initial_pose, step_mm=3.0, device=device)
        first = prepare_xray(image, field_mask, detect_field=False, detect_metal=False)  # constant fills only
        reading, scores = detect_polarity(resize_image(image, small), drr, resize_image(first.weight, small))
        record["polarity_scores"] = {name: round(value, 3) for name, value in scores.items()}
        if reading != "bone-bright" and scores[reading] - scores["bone-bright"] >= _POLARITY_MARGIN:
            image = apply_reading(image, reading)
            record["polarity"] = reading
        record.setdefault("polarity", "bone-bright")
        record["polarity_source"] = "drr-comparison"
    prepared = prepare_xray(image, field_mask)
    record.update(prepared.summary())
    metadata = {**xray.metadata, "prepared": True}
    return replace(xray, image=prepared.image.contiguous(), metadata=metadata), prepared.weight, record
