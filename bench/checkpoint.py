"""Loading weights: official DeiT files, plain timm state dicts, safetensors, or timm's hub.

A checkpoint is untrusted input: `torch.load(weights_only=True)`, and a file named like an official
release (`…-<8 hex>.pth`) must hash to that prefix, as `torch.hub` checks with `check_hash=True`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.errors import CheckpointError

# The official release (facebookresearch/deit README); names end in the first 8 hex digits of their sha256.
OFFICIAL_BASE = "https://dl.fbaipublicfiles.com/deit/"
OFFICIAL_FILES = {
    "deit_ti": "deit_tiny_patch16_224-a1311bcf.pth",
    "deit_s": "deit_small_patch16_224-cd65a155.pth",
    "deit_b": "deit_base_patch16_224-b5f2ef4d.pth",
    "deit_b_384": "deit_base_patch16_384-8de9b5d1.pth",
    "deit_ti_dist": "deit_tiny_distilled_patch16_224-b40b3cf7.pth",
    "deit_s_dist": "deit_small_distilled_patch16_224-649709d9.pth",
    "deit_b_dist": "deit_base_distilled_patch16_224-df68dfff.pth",
    "deit_b_dist_384": "deit_base_distilled_patch16_384-d0272ac0.pth",
    "regnety_160": "regnety_160-a5fe301d.pth",
}
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.(?:pth|pt|bin|safetensors)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """What the record says about the weights."""

    path: str
    sha256: str
    official: bool  # an official DeiT release file, by name and verified hash
    num_classes: int | None  # from the classifier head's shape

    def describe(self) -> str:
        if self.official:
            return f"official DeiT release {Path(self.path).name} (sha256 verified)"
        return f"user checkpoint {Path(self.path).name}: not an official release, so not a reproduction of the paper"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """The model weights in `path` (unwrapped, `module.` prefixes removed), after the hash check."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    sha = sha256_of(path)
    match = _HASH_IN_NAME.search(path.name)
    if match and not sha.startswith(match.group(1)):
        raise CheckpointError(f"checkpoint {path.name} names sha256 prefix {match.group(1)} but hashes to "
                              f"{sha[:8]}: the file is corrupt or not the release it claims to be; re-download it")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, safetensors header errors: all mean "not a usable checkpoint"
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    state = raw
    for key in ("model", "state_dict"):  # official DeiT training checkpoints wrap the weights in 'model'
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict (expected tensors, or a dict with 'model')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    head = state.get("head.weight", state.get("fc.weight"))
    official = bool(match) and path.name in OFFICIAL_FILES.values()
    info = CheckpointInfo(str(path), sha, official, int(head.shape[0]) if head is not None else None)
    return state, info


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly; list missing keys, unexpected keys and shape mismatches in one clear error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(items)}): {', '.join(items[:8])}{' …' if len(items) > 8 else ''}"
                 for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("shape mismatches", shapes)) if items]
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state)


def load_pretrained(model_name: str, **kwargs) -> nn.Module:
    """timm's hub weights; where there is no network, say how to proceed instead of a stack of HTTP errors."""
    import timm

    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except Exception as exc:
        raise CheckpointError(f"--pretrained: could not fetch timm weights for {model_name} "
                              f"({type(exc).__name__}); without network access pass --checkpoint FILE, "
                              f"e.g. the official {OFFICIAL_BASE}<file>") from None
