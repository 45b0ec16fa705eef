"""--init WEIGHTS: start the backbone from a local file (an exported encoder or a safetensors file)."""

from __future__ import annotations

import logging
from pathlib import Path

from moco.checkpoint import first_line
from moco.errors import InputError
from moco.model import MoCo

logger = logging.getLogger(__name__)

START_WITHOUT_INIT = "to start afresh, leave out --init"


def load_init_weights(model: MoCo, path: Path) -> None:
    """Load backbone weights into both encoders. Accepts an encoder folder, an `encoder.safetensors`, or a
    safetensors file of a torchvision ResNet (keys like `layer1.0.conv1.weight`). Never unpickles."""
    from safetensors.torch import load_file

    file = path / "encoder.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no weights file found")
    if file.suffix != ".safetensors":
        raise InputError(
            f"{file}: refused as unsafe: only .safetensors weights are loaded (pickle files are never unpickled);"
            f" {START_WITHOUT_INIT}"
        )
    try:
        state = load_file(str(file))
    except Exception as e:
        raise InputError(
            f"{file}: refused: not a readable safetensors file ({first_line(e)}); {START_WITHOUT_INIT}"
        ) from None
    candidates = (
        {k.removeprefix("encoder.backbone."): v for k, v in state.items() if k.startswith("encoder.backbone.")},
        {k: v for k, v in state.items() if k.startswith("net.")},
        {f"net.{k}": v for k, v in state.items() if not k.startswith("fc.")},
    )
    for sub in candidates:
        missing, _ = model.encoder_q.backbone.load_state_dict(sub, strict=False) if sub else (["all"], [])
        if not missing:
            model.encoder_k.backbone.load_state_dict(model.encoder_q.backbone.state_dict())
            logger.info("initialised the backbone from %s", file)
            return
    raise InputError(f"{file}: weights do not match a {model.cfg.arch} backbone")
