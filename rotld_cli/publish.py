"""Turn a training checkpoint into a release file: strip, verify, hash, name.

Kept: the `state_dict` without teacher weights, `meta` converted to plain Python types (so the
file loads with `torch.load(weights_only=True)` anywhere, without rotld), and top-level scalars
such as `epoch`. Removed: the optimizer and the resume-only `meta.rng`/`meta.fp16` (all three
kept with `--keep-optimizer`), any other top-level training state, and `meta.hook_msgs` (runner
bookkeeping that holds local paths). A distilled checkpoint is marked
`meta["rotld"]["published_from_distill"]` and its config goes through `convert_config`.

The file is serialised in memory, re-loaded safely, hashed, and written atomically as
`<stem>-<first 8 hex of sha256>.pth`, the name MMRotate's `publish_model.py` gives
(method.md §8). Serialising through memory also makes the bytes, and so the name,
reproducible: publishing the same checkpoint twice gives one file.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rotld_cli import __version__
from rotld_cli.checkpoints import load_checkpoint_file, sha256_file
from rotld_cli.errors import RotldError
from rotld_cli.fileio import atomic_write_bytes

TEACHER_PREFIX = "teacher"
DROPPED_META_KEYS = ("hook_msgs",)  # MMCV runner bookkeeping: local checkpoint paths
RESUME_META_KEYS = ("rng", "fp16")  # RNG and loss-scaler states: only resuming needs them
_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_DISTILL_CONFIG = re.compile(r"KnowledgeDistillation\w*Detector|\bteacher_(?:config|ckpt)\b")
_ANGLE_VERSION = re.compile(r"""\bangle_version\s*[:=]\s*['"]?(oc|le90|le135)\b""")


@dataclass
class PublishResult:
    """What `publish_model` did; `to_json()` is the `--json` output."""

    input: Path
    output: Path
    sha256: str
    size_before: int
    size_after: int
    kept: list[str]
    removed: list[str]
    state_dict_keys: int
    teacher_keys_removed: int
    published_from_distill: bool
    converted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input"], data["output"] = str(self.input), str(self.output)
        return data


def is_teacher_key(key: str) -> bool:
    """`teacher_model.backbone.conv1.weight` (also under DDP's `module.` prefix) is teacher weight."""
    key = key[len("module.") :] if key.startswith("module.") else key
    return key.startswith(TEACHER_PREFIX)


def describes_distillation(meta: Mapping[str, Any]) -> bool:
    """True when `meta` records a teacher, or its recipe/config builds a distillation detector.

    rotld recipes (YAML text or a dict) distil when they have a `teacher` or `distill` section;
    MMCV config text when it names a KD detector type or `teacher_config`/`teacher_ckpt`.
    """
    rotld = meta.get("rotld") if isinstance(meta.get("rotld"), Mapping) else {}
    if meta.get("teacher") or rotld.get("teacher"):
        return True
    for source in (meta.get("recipe"), rotld.get("recipe")):
        recipe = _yaml_mapping(source)
        if recipe is not None and ("teacher" in recipe or "distill" in recipe):
            return True
    sources = [meta.get("config"), rotld.get("config"), meta.get("recipe"), rotld.get("recipe")]
    return any(_DISTILL_CONFIG.search(text) for text in _strings(sources))


def _yaml_mapping(value: Any) -> Mapping[str, Any] | None:
    """A recipe as a mapping: the dict itself, or YAML text parsed; None for anything else."""
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        return None
    import yaml

    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return None
    return parsed if isinstance(parsed, Mapping) else None


def convert_config(meta: dict[str, Any]) -> dict[str, Any]:
    """Hook: rewrite a distillation recipe/config into the plain student's. Identity for now.

    A distilled checkpoint's config still names the KD detector and its teacher; the student
    weights load into the student detector alone. The rewrite lands with the recipe work.
    """
    return meta


def publish_model(
    src: str | os.PathLike[str], out: str | os.PathLike[str], *, keep_optimizer: bool = False, trust: bool = False
) -> PublishResult:
    """Strip `src` for release and write it beside/into `out` under its hashed name."""
    into_dir = os.fspath(out).endswith(("/", os.sep)) or Path(out).is_dir()
    src, out = Path(src), Path(out)
    checkpoint = load_checkpoint_file(src, trust=trust)
    if not isinstance(checkpoint, Mapping):
        raise RotldError(f"{src}: not a training checkpoint (holds a {type(checkpoint).__name__}, expected a dict)")
    if "state_dict" not in checkpoint:
        keys = ", ".join(map(str, checkpoint)) or "none"
        raise RotldError(f"{src}: no 'state_dict' in the checkpoint (top-level keys: {keys})")
    if not isinstance(checkpoint["state_dict"], Mapping):
        kind = type(checkpoint["state_dict"]).__name__
        raise RotldError(f"{src}: 'state_dict' is a {kind}, expected a dict of tensors")

    kept: list[str] = []
    removed: list[str] = []
    converted: list[str] = []
    notes: list[str] = []
    state_dict, teacher_removed = _strip_teacher(checkpoint["state_dict"], removed)
    if not state_dict:
        raise RotldError(f"{src}: the state_dict holds no student weights (only teacher keys, or none)")
    published: dict[str, Any] = {"state_dict": state_dict}
    kept.append(f"state_dict ({len(state_dict)} keys)")

    meta = checkpoint.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        raise RotldError(f"{src}: 'meta' is a {type(meta).__name__}, expected a dict")
    dropped = DROPPED_META_KEYS if keep_optimizer else DROPPED_META_KEYS + RESUME_META_KEYS
    meta = _plain_meta(meta or {}, dropped, removed, converted)
    rotld = meta.setdefault("rotld", {})
    if not isinstance(rotld, dict):
        raise RotldError(f"{src}: meta['rotld'] is a {type(rotld).__name__}, expected a dict")
    rotld["published_with"] = __version__
    rotld["source_sha256"] = sha256_file(src)
    _record_angle_version(meta)
    if describes_distillation(meta) or teacher_removed or rotld.get("published_from_distill"):
        rotld["published_from_distill"] = True
        meta = convert_config(meta)
    if "CLASSES" not in meta:
        notes.append("meta has no CLASSES: tools will not know the class names")
    published["meta"] = meta
    kept.append(f"meta ({', '.join(map(str, meta))})")

    for key, value in checkpoint.items():
        if key in ("state_dict", "meta"):
            continue
        if key == "optimizer" and keep_optimizer:
            published[key] = value
            kept.append(key)
        elif isinstance(value, _PLAIN_SCALARS) or _is_numpy_scalar(value):
            published[key] = _to_plain(value, str(key), converted)
            kept.append(str(key))
        else:
            removed.append(str(key))
    if keep_optimizer and "optimizer" not in checkpoint:
        notes.append("--keep-optimizer: the checkpoint has no optimizer state")

    data = _serialise_verified(published, src)
    digest = hashlib.sha256(data).hexdigest()
    final = hashed_path(out, src, digest, into_dir)
    atomic_write_bytes(final, data)
    if sha256_file(final) != digest:
        final.unlink(missing_ok=True)
        raise RotldError(f"{final}: the written file does not match its hash (disk full or faulty storage?)")
    return PublishResult(
        input=src,
        output=final,
        sha256=digest,
        size_before=src.stat().st_size,
        size_after=len(data),
        kept=kept,
        removed=removed,
        state_dict_keys=len(state_dict),
        teacher_keys_removed=teacher_removed,
        published_from_distill=bool(rotld.get("published_from_distill")),
        converted=converted,
        notes=notes,
    )


def hashed_path(out: Path, src: Path, digest: str, into_dir: bool = False) -> Path:
    """`student.pth` -> `student-1a2b3c4d.pth`; a directory gets the input's stem inside it."""
    if into_dir or out.is_dir():
        stem, suffix, parent = src.stem, src.suffix or ".pth", out
    else:
        stem, suffix, parent = out.stem, out.suffix or ".pth", out.parent
    return parent / f"{stem}-{digest[:8]}{suffix}"


def _strip_teacher(state_dict: Mapping[str, Any], removed: list[str]) -> tuple[OrderedDict[str, Any], int]:
    """Drop teacher weights; keep torch's per-module `_metadata` (versions) for the rest."""
    kept: OrderedDict[str, Any] = OrderedDict()
    prefixes: dict[str, int] = {}
    for key, value in state_dict.items():
        if is_teacher_key(str(key)):
            prefix = str(key).split(".")[0] if not str(key).startswith("module.") else ".".join(str(key).split(".")[:2])
            prefixes[prefix] = prefixes.get(prefix, 0) + 1
        else:
            kept[key] = value
    metadata = getattr(state_dict, "_metadata", None)
    if isinstance(metadata, Mapping):
        kept._metadata = OrderedDict((k, v) for k, v in metadata.items() if not is_teacher_key(str(k)))  # type: ignore[attr-defined]
    removed.extend(f"state_dict {prefix}.* ({count} keys)" for prefix, count in prefixes.items())
    return kept, sum(prefixes.values())


def _plain_meta(
    meta: Mapping[str, Any], dropped: tuple[str, ...], removed: list[str], converted: list[str]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in meta.items():
        if key in dropped:
            removed.append(f"meta.{key}")
            continue
        result[_plain_key(key)] = _to_plain(value, f"meta.{key}", converted)
    return result


def _plain_key(key: Any) -> Any:
    return key if isinstance(key, (str, int, float, bool, type(None))) else str(key)


def _is_numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0


def _to_plain(value: Any, where: str, converted: list[str]) -> Any:
    """Convert to types `torch.load(weights_only=True)` accepts; each conversion is recorded."""
    if type(value) in _PLAIN_SCALARS:
        return value
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, (Mapping, list, tuple)):
        if isinstance(value, Mapping):
            plain: Any = {_plain_key(k): _to_plain(v, f"{where}.{k}", converted) for k, v in value.items()}
        else:
            items = [_to_plain(v, f"{where}[{i}]", converted) for i, v in enumerate(value)]
            plain = items if isinstance(value, list) else tuple(items)
        if type(value) not in (dict, OrderedDict, list, tuple):
            converted.append(f"{where} ({kind} -> {type(plain).__name__})")
        return plain
    if _is_tensor(value):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        plain = value.tolist()
    elif isinstance(value, (set, frozenset)):
        plain = sorted((_to_plain(v, where, converted) for v in value), key=repr)
    elif isinstance(value, (bool, int, float, str, bytes)):
        plain = _base_scalar(value)
    elif isinstance(value, (datetime.date, datetime.time)):
        plain = value.isoformat()
    elif isinstance(getattr(value, "pretty_text", None), str):
        plain = value.pretty_text
    else:
        plain = str(value)
    converted.append(f"{where} ({kind} -> {type(plain).__name__})")
    return plain


def _base_scalar(value: Any) -> Any:
    for base in (bool, int, float, str, bytes):
        if isinstance(value, base):
            return base(value)
    return value


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _record_angle_version(meta: dict[str, Any]) -> None:
    """Copy `angle_version` from the config text into meta['rotld'] when nothing records it yet."""
    rotld = meta["rotld"]
    if "angle_version" in meta or "angle_version" in rotld:
        return
    for text in _strings([meta.get("config"), meta.get("recipe"), rotld.get("recipe"), rotld.get("config")]):
        match = _ANGLE_VERSION.search(text)
        if match:
            rotld["angle_version"] = match.group(1)
            return


def _strings(values: list[Any]) -> list[str]:
    """All strings inside the given values (recipes may be YAML text or parsed dicts)."""
    found: list[str] = []
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return found


def _serialise_verified(checkpoint: dict[str, Any], src: Path) -> bytes:
    """Serialise in memory and prove the bytes load with plain `weights_only=True`."""
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a bug here must not produce an unloadable release
        raise RotldError(f"{src}: the stripped checkpoint does not load with weights_only=True ({exc})") from exc
    if set(loaded["state_dict"]) != set(checkpoint["state_dict"]):
        raise RotldError(f"{src}: the stripped checkpoint lost state_dict keys on reload")
    return data
