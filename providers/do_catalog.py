"""Reading DigitalOcean sizes and images: which are GPUs, whose, and which image to boot.

Pure functions over the API's JSON (no pydo import), so they are cheap to test and the
preferences (ROCm + PyTorch on AMD, the AI/ML-ready image on NVIDIA) live in one place
instead of a hard-coded slug: the catalog changes under us, the preferences do not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

JSON = Mapping[str, Any]

_NVIDIA_HINTS = ("nvidia", "h100", "h200", "l40s", "a100", "a6000", "4000ada", "6000ada", "b300")
_AMD_HINTS = ("amd", "mi300", "mi325", "mi350", "mi355", "rocm")


def gpu_count(size: JSON) -> int:
    info = size.get("gpu_info") or {}
    try:
        return int(info.get("count") or 0)
    except (TypeError, ValueError):
        return 0


def is_gpu(size: JSON) -> bool:
    return gpu_count(size) > 0 or str(size.get("slug", "")).startswith("gpu-")


def gpu_vendor(size: JSON) -> str | None:
    """'amd' | 'nvidia' | None, from gpu_info.model, falling back to the slug."""
    if not is_gpu(size):
        return None
    model = str((size.get("gpu_info") or {}).get("model") or "").lower()
    slug = str(size.get("slug", "")).lower()
    for text in (model, slug):
        if any(h in text for h in _AMD_HINTS):
            return "amd"
        if any(h in text for h in _NVIDIA_HINTS):
            return "nvidia"
    return None


def gpu_name(size: JSON) -> str:
    """'MI300X', 'H100': the API's model ('amd_mi300x') without vendor prefix."""
    model = str((size.get("gpu_info") or {}).get("model") or "").strip()
    if not model:
        match = re.match(r"gpu-([a-z0-9]+?)x\d+", str(size.get("slug", "")))
        return match.group(1).upper() if match else ""
    if " " in model:  # already a display name ("AMD Instinct MI300X")
        return model
    parts = model.split("_")
    if len(parts) > 1 and parts[0].lower() in ("amd", "nvidia", "intel"):
        parts = parts[1:]
    return " ".join(parts).upper()


def gpu_memory_gb(size: JSON) -> float:
    """VRAM per GPU in GB; the API reports the droplet's total for multi-GPU sizes."""
    info = size.get("gpu_info") or {}
    vram = info.get("vram") or {}
    try:
        amount = float(vram.get("amount") or 0)
    except (TypeError, ValueError):
        return 0.0
    if str(vram.get("unit", "")).lower() in ("mib", "mb"):
        amount /= 1024
    count = gpu_count(size)
    total = re.search(r"-(\d+)gb", str(size.get("slug", "")))
    if count > 1 and (total is None or abs(float(total.group(1)) - amount) < 1):
        # "gpu-mi300x8-1536gb" with vram 1536: total for 8 GPUs
        amount /= count
    return round(amount, 1)


# -- images ---------------------------------------------------------------------------


def _text(image: JSON) -> str:
    return " ".join(
        str(image.get(k) or "") for k in ("slug", "name", "description", "distribution")
    ).lower()


def has_torch(image: JSON) -> bool:
    return "torch" in _text(image)


def _version(image: JSON) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(image.get("slug") or image.get("name"))))


def image_label(image: JSON) -> str:
    return str(image.get("slug") or image.get("id"))


def _rank(image: JSON, vendor: str | None, size_slug: str) -> int | None:
    """Lower is better; None: not suitable for this kind of machine."""
    text = _text(image)
    slug = str(image.get("slug") or "").lower()
    if vendor == "amd":
        if any(h in text for h in ("nvidia", "cuda")):
            return None
        rocm = "rocm" in text or (slug.startswith("gpu-amd") and "base" in slug)
        if rocm and has_torch(image):
            return 0
        return 1 if rocm else None
    if vendor == "nvidia":
        if any(h in text for h in ("rocm", "amd")):
            return None
        match = re.match(r"(gpu-[a-z0-9]+x\d+)-", size_slug)
        if match and slug == f"{match.group(1)}-base":
            return 0
        if slug.startswith("gpu-") and "base" in slug:
            return 1
        if any(h in text for h in ("ai/ml", "cuda", "nvidia")):
            return 2
        return None
    if str(image.get("distribution") or "").lower() == "ubuntu" and slug.endswith("-x64"):
        return 0 if slug.startswith("ubuntu-") else 1
    return None


def usable_in(image: JSON, region: str | None) -> bool:
    if str(image.get("status") or "available") != "available":
        return False
    regions = image.get("regions") or []
    return not (region and regions and region not in regions)


def choose_image(
    images: Iterable[JSON], vendor: str | None, size_slug: str, region: str | None
) -> JSON | None:
    """The preferred image for this size in region: torch-ready first, newest first."""
    ranked = []
    for image in images:
        if not usable_in(image, region):
            continue
        rank = _rank(image, vendor, size_slug)
        if rank is None:
            continue
        version = tuple(-n for n in _version(image))
        ranked.append(((rank, not has_torch(image), version, image_label(image)), image))
    ranked.sort(key=lambda pair: pair[0])
    return ranked[0][1] if ranked else None


def find_image(images: Iterable[JSON], ref: str) -> JSON | None:
    """An image named by slug, numeric id or (case-insensitive) name."""
    wanted = ref.strip().lower()
    for image in images:
        keys = {str(image.get("slug") or "").lower(), str(image.get("id")).lower()}
        keys.add(str(image.get("name") or "").lower())
        if wanted in keys:
            return image
    return None


def suitable_images(images: Iterable[JSON], vendor: str | None, size_slug: str) -> list[str]:
    """Slugs worth suggesting when an --image name is wrong."""
    out = [image_label(i) for i in images if _rank(i, vendor, size_slug) is not None]
    return sorted(set(out))
