"""Loading weights: official DeiT files, plain timm state dicts, safetensors, or timm's hub.

A checkpoint is untrusted input: `torch.load(weights_only=True)`, and a file named like an official
release (`…-<8 hex>.pth`) must hash to that prefix, as `torch.hub` checks with `check_hash=True`.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
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
    class_names: tuple[str, ...] | None = None  # label order by name, where the file says (reproduce train's)

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
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except Exception as exc:  # header or size errors: not a usable safetensors file
            raise CheckpointError(f"cannot read checkpoint {path}: not a valid safetensors file "
                                  f"({type(exc).__name__}: {exc})") from None
    else:
        raw = load_torch_file(path, "checkpoint")
    names = raw.get("class_names") if isinstance(raw, dict) else None
    names = tuple(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None
    state = raw
    for key in ("model", "state_dict"):  # official DeiT training checkpoints wrap the weights in 'model'
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict (expected tensors, or a dict with 'model')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    head = state.get("head.weight", state.get("fc.weight"))
    official = bool(match) and path.name in OFFICIAL_FILES.values()
    classes = int(head.shape[0]) if head is not None else None
    if names is not None and classes is not None and len(names) != classes:
        raise CheckpointError(f"checkpoint {path} names {len(names)} classes but its head has {classes}")
    info = CheckpointInfo(str(path), sha, official, classes, names)
    return state, info


def load_torch_file(path: Path, what: str):
    """`torch.load(path, weights_only=True)` with a reason a user can act on when it fails: an empty file, a file
    that is not a torch checkpoint at all, a truncated one, or one holding Python objects that weights-only loading
    refuses to run (a foreign or malicious pickle)."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist or is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): an interrupted copy or download?")
    with path.open("rb") as f:
        head = f.read(4)
    is_zip, is_pickle = head.startswith(b"PK"), head[:1] == b"\x80"  # torch.save's zip, or a legacy pickle
    if not (is_zip or is_pickle):
        raise CheckpointError(f"{what} {path} is not a torch checkpoint ({size:,} bytes starting {head!r}; "
                              "torch.save writes a zip archive, older versions a pickle)")
    # torch.load reads changed bytes without a word: a resume trained on, to 10 % top-1 where 80 % was due (a
    # hostile pass overwrote 8 bytes in the middle); the archive's CRCs say so
    damaged = _failing_crc(path) if is_zip else None
    if damaged:
        raise CheckpointError(f"{what} {path} is damaged: its part {damaged} fails the archive's CRC check, so bytes "
                              "changed after it was written (a disk or a copy); it cannot be used as it is")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split("\n")[0]  # torch bolds words with terminal codes
        raise CheckpointError(f"{what} {path} holds Python objects besides tensors and plain containers, which "
                              f"loading with weights_only=True refuses to run ({detail}); a trusted file can be "
                              "re-saved as torch.save(model.state_dict(), PATH)") from None
    except Exception as exc:  # zip central directory missing, short reads: the file was cut off or damaged
        first = str(exc).split(". ")[0].split("\n")[0]  # torch adds a paragraph of advice
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({size:,} bytes; "
                              f"{type(exc).__name__}: {first})") from None


def _failing_crc(path: Path) -> str | None:
    """The first part of a torch.save archive whose bytes fail their CRC-32, or None. A part stored with CRC 0 is
    not checked: `torch.serialization.set_crc32_options(False)` writes none. An archive zipfile cannot read is left
    to torch.load, whose error names it."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0:
                    continue
                try:
                    with archive.open(info) as part:
                        while part.read(1 << 24):  # zipfile compares the CRC once the part is read to its end
                            pass
                except zipfile.BadZipFile:
                    return info.filename
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):  # zipfile's errors on a cut-off file
        return None
    return None


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

    if not _hub_reachable():  # the local cache only: no ~50 s of retries before the same answer
        import huggingface_hub.constants as hub

        hub.HF_HUB_OFFLINE = True
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except Exception as exc:
        raise CheckpointError(f"--pretrained: could not fetch timm weights for {model_name} "
                              f"({type(exc).__name__}); without network access pass --checkpoint FILE, "
                              f"e.g. the official {OFFICIAL_BASE}<file>") from None


def _hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection within a few seconds (name resolution included)."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False
