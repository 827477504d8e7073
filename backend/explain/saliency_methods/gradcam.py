"""Grad-CAM (Selvaraju et al. 2017) on the model contract's CAM layer, upsampled to the image."""
from __future__ import annotations

import torch.nn as nn

from backend.explain.saliency import twin
from backend.explain.saliency_registry import SaliencyMethod, register


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM weighs: the model contract's `cam_layer` (backend.core.archs)."""
    from backend.core.archs import cam_layer

    try:
        return cam_layer(model)
    except ValueError as e:
        raise ValueError(f"gradcam needs a model with a CAM layer: {e}") from None


def compute(model, inp, tgt, params):
    """The CAM layer's map (N,1,h,w), upsampled bilinearly to (H,W) and repeated over the 3 channels.
    Hooks go on a per-call twin, never on the shared model."""
    from captum.attr import LayerAttribution, LayerGradCam

    h, w = inp.shape[2:]
    tw = twin(model)
    cam = LayerGradCam(tw, cam_layer(tw)).attribute(inp, target=tgt)  # (N,1,h',w')
    cam = LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")
    return cam.expand(-1, 3, -1, -1).contiguous()  # (N,3,H,W)


METHOD = register(SaliencyMethod(
    "gradcam", "Grad-CAM", order=40, default_on=True, display="positive", compute=compute,
    info="Which regions of the last convolutional stage (the CAM layer) support the class, "
         "upsampled to the image: coarse but class-specific."))
