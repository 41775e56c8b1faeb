"""Baseline prompts: the ``prompts.json`` format, its validation and its frame conversion.

A prompt file names its frame once::

    {
      "frame": "world",                       # "world": mm, LPS, (x, y, z)
      "lesions": [                            # "voxel": indices (z, y, x) of the SimpleITK array
        {"id": 1, "point": [-20.5, 31.0, 12.0]},
        {"id": 2, "box": {"min": [-60, 0, -10], "max": [-30, 25, 14]}},
        {"id": 7, "point": [10, 10, 5], "box": {"min": [0, 0, 0], "max": [20, 20, 10]}}
      ]
    }

Each lesion has a positive integer ``id`` (unique within the file; any value up to 2**31-1, not
limited to 255) and a ``point``, a ``box`` or both.

The same format serves every session. At a follow-up, a reader's file corrects a tracked lesion
(its ID: the prompt replaces propagation for that lesion from that session on), adds a lesion the
tracker missed (a new ID: a new lesion, confirmed by the reader), or reviews a new-lesion candidate
without prompting it: ``{"id": 2000001, "review": "confirmed"}`` (or ``"rejected"``). A world box is axis-aligned in LPS; a voxel box
is inclusive of both corners. Types are strict: an ``id`` is a JSON integer (not ``true``, ``"7"``
or ``7.0``), a coordinate a JSON number (not a string or a boolean). The file is UTF-8 text.

The released LesionLocator's prompt files are read too (:func:`from_upstream`): an object keyed by
lesion ID, each entry a ``point`` (voxel indices z, y, x of the SimpleITK array) or a ``box``
``[z_min, z_max, y_min, y_max, x_min, x_max]`` with half-open intervals, numbers or numeric
strings, e.g. ``{"1": {"point": ["166.01", "361.74", "162.64"]}, "2": {"box": [146, 189, 316, 409,
114, 234]}}``. They become voxel-frame prompts (the box's upper corner is ``max - 1``: inclusive).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, ValidationError, field_validator, model_validator

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry

Coordinate = Annotated[float, Strict()]  # a JSON number: an integer or a float, never a string or a boolean
Vec3 = tuple[Coordinate, Coordinate, Coordinate]
MAX_LESION_ID = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoxPrompt(_Strict):
    """An axis-aligned box given by two opposite corners, in the file's frame."""

    min: Vec3 = Field(description="Lower corner.")
    max: Vec3 = Field(description="Upper corner (each coordinate >= the lower corner's).")

    @model_validator(mode="after")
    def _ordered(self) -> "BoxPrompt":
        for axis, (lo, hi) in enumerate(zip(self.min, self.max)):
            if lo > hi:
                raise ValueError(f"box min > max on axis {axis} ({lo} > {hi})")
        return self

    def corners(self) -> np.ndarray:
        """The 8 corners, shape (8, 3), in the box's frame."""
        lo, hi = np.asarray(self.min), np.asarray(self.max)
        grid = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
        return lo + grid * (hi - lo)


class LesionPrompt(_Strict):
    """The prompt of one lesion."""

    id: StrictInt = Field(ge=1, le=MAX_LESION_ID, description="Lesion ID (a JSON integer), kept through every session.")
    point: Vec3 | None = Field(None, description="A click inside the lesion.")
    box: BoxPrompt | None = Field(None, description="A box around the lesion.")
    review: Literal["confirmed", "rejected"] | None = Field(
        None,
        description="Follow-up sessions only: a reader's verdict on a new-lesion candidate (its ID in the "
        "tracking table): confirmed (a new lesion, tracked on) or rejected (not a lesion, not tracked on). "
        "An entry may hold a review alone, without point or box.",
    )

    @model_validator(mode="after")
    def _has_prompt(self) -> "LesionPrompt":
        if self.point is None and self.box is None and self.review is None:
            raise ValueError(f"lesion {self.id} has neither a point, a box nor a review")
        return self

    @property
    def has_prompt(self) -> bool:
        """True when the entry locates the lesion (a point or a box), not only reviews it."""
        return self.point is not None or self.box is not None


class PromptFile(_Strict):
    """The content of a ``prompts.json``."""

    frame: Literal["world", "voxel"] = Field(
        description='"world": mm in LPS (x, y, z); "voxel": array indices (z, y, x).'
    )
    lesions: list[LesionPrompt] = Field(min_length=1, description="One entry per lesion.")

    @field_validator("lesions")
    @classmethod
    def _unique_ids(cls, lesions: list[LesionPrompt]) -> list[LesionPrompt]:
        ids = [lesion.id for lesion in lesions]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"lesion id(s) {repeated} repeated")
        return lesions

    def in_voxel_frame(self, geometry: Geometry) -> "PromptFile":
        """The same prompts as continuous voxel indices (z, y, x) of ``geometry``.

        A world box becomes the voxel bounding box of its 8 mapped corners.
        """
        if self.frame == "voxel":
            return self
        lesions = []
        for lesion in self.lesions:
            point = None if lesion.point is None else tuple(geometry.world_to_index(lesion.point).tolist())
            box = None
            if lesion.box is not None:
                corners = geometry.world_to_index(lesion.box.corners())
                box = BoxPrompt(min=tuple(corners.min(0).tolist()), max=tuple(corners.max(0).tolist()))
            lesions.append(LesionPrompt(id=lesion.id, point=point, box=box, review=lesion.review))
        return PromptFile(frame="voxel", lesions=lesions)

    def in_world_frame(self, geometry: Geometry) -> "PromptFile":
        """The same prompts in world mm (LPS); a voxel box becomes the world bounding box."""
        if self.frame == "world":
            return self
        lesions = []
        for lesion in self.lesions:
            point = None if lesion.point is None else tuple(geometry.index_to_world(lesion.point).tolist())
            box = None
            if lesion.box is not None:
                corners = geometry.index_to_world(lesion.box.corners())
                box = BoxPrompt(min=tuple(corners.min(0).tolist()), max=tuple(corners.max(0).tolist()))
            lesions.append(LesionPrompt(id=lesion.id, point=point, box=box, review=lesion.review))
        return PromptFile(frame="world", lesions=lesions)


def read_prompts(path: str | Path) -> PromptFile:
    """Parse and validate a ``prompts.json``; errors name the file and the field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(path, f"cannot read prompt file ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark (Windows editors) is harmless
    except UnicodeDecodeError as err:
        bom = {b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}.get(raw[:2])
        found = f"it is {bom} text" if bom else f"byte {err.start} is not UTF-8"
        raise InputError(path, f"not UTF-8 text ({found}): save it as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    if is_upstream(data):
        data = from_upstream(data, path)
    try:
        return PromptFile.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            else:
                message = item["msg"].removeprefix("Value error, ")
                if isinstance(item.get("input"), (bool, int, float, str)):
                    message += f" (got {json.dumps(item['input'])})"
            problems.append(f"{_field_path(item['loc'])}: {message}")
        raise InputError(path, "invalid prompts: " + "; ".join(problems)) from None


def is_upstream(data: object) -> bool:
    """True for a prompt file in the released LesionLocator's format: a non-empty object whose keys
    are all lesion IDs (digits) and whose values are objects (ours has ``frame`` and ``lesions``)."""
    return (isinstance(data, dict) and bool(data) and all(isinstance(k, str) and k.isdigit() for k in data)
            and all(isinstance(v, dict) for v in data.values()))


def _upstream_numbers(values: object, n: int, where: str, path: Path) -> list[float]:
    """``values`` as ``n`` finite floats (JSON numbers or numeric strings, as the released tools write them)."""
    if not isinstance(values, list) or len(values) != n:
        raise InputError(path, f"invalid prompts: {where}: expects a list of {n} numbers (got {json.dumps(values)})")
    numbers = []
    for value in values:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not np.isfinite(number):
            raise InputError(path, f"invalid prompts: {where}: {json.dumps(value)} is not a finite number")
        numbers.append(number)
    return numbers


def from_upstream(data: dict, path: str | Path) -> dict:
    """A released-LesionLocator prompt file (see :func:`is_upstream`) as this project's voxel-frame
    prompt file (a dict to validate as :class:`PromptFile`). A point is voxel indices (z, y, x); a box
    ``[z_min, z_max, y_min, y_max, x_min, x_max]`` is half-open, so its inclusive upper corner is
    ``max - 1``. Errors name the file and the entry."""
    path = Path(path)
    lesions = []
    for key in sorted(data, key=int):
        entry = data[key]
        unknown = sorted(set(entry) - {"point", "box"})
        if unknown:
            raise InputError(path, f'invalid prompts: "{key}": unknown key(s) {unknown} (the released format has point and box)')
        lesion: dict = {"id": int(key)}
        if "point" in entry:
            lesion["point"] = _upstream_numbers(entry["point"], 3, f'"{key}".point', path)
        if "box" in entry:
            z0, z1, y0, y1, x0, x1 = _upstream_numbers(entry["box"], 6, f'"{key}".box', path)
            if z1 <= z0 or y1 <= y0 or x1 <= x0:
                raise InputError(path, f'invalid prompts: "{key}".box: [z_min, z_max, y_min, y_max, x_min, x_max] is half-open, '
                                       f"each max must exceed its min (got {json.dumps(entry['box'])})")
            lesion["box"] = {"min": [z0, y0, x0], "max": [z1 - 1, y1 - 1, x1 - 1]}
        lesions.append(lesion)
    return {"frame": "voxel", "lesions": lesions}


def _field_path(loc: tuple) -> str:
    """A pydantic error location as the JSON path a user reads: ``lesions[0].box.min[2]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def check_prompts_inside(prompts: PromptFile, geometry: Geometry, path: str | Path) -> None:
    """Raise :class:`InputError` when a point, or any box corner, lies outside the image."""
    voxel = prompts.in_voxel_frame(geometry)
    for original, mapped in zip(prompts.lesions, voxel.lesions):
        if mapped.point is not None and not geometry.contains_index(mapped.point):
            raise InputError(
                path,
                f"lesion {original.id}: point {list(original.point)} ({prompts.frame} frame) lies outside the image "
                f"(voxel index z,y,x {np.round(mapped.point, 1).tolist()}, array shape {list(geometry.shape_zyx)})",
            )
        if mapped.box is not None:
            corners = mapped.box.corners()
            if not geometry.contains_index(corners).all():
                raise InputError(
                    path,
                    f"lesion {original.id}: box {list(original.box.min)}..{list(original.box.max)} "
                    f"({prompts.frame} frame) reaches outside the image (array shape {list(geometry.shape_zyx)})",
                )


def check_lesion_labels(labels: np.ndarray, path: str | Path, what: str = "lesion mask") -> None:
    """Raise :class:`InputError` unless every voxel of a lesion instance mask is a lesion ID: an
    integer from 0 (background) to :data:`MAX_LESION_ID`. Refuses negative values and, in a float
    image, non-integer values (a probability map or an intensity image, not labels)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise InputError(path, f"{what} has voxel type {labels.dtype}: it must hold integer lesion IDs")
    if labels.size == 0:
        return
    low, high = labels.min(), labels.max()
    if labels.dtype.kind == "f":
        fractional = labels[labels != np.round(labels)]
        if fractional.size:
            raise InputError(
                path,
                f"{what} holds {fractional.size} non-integer value(s) (e.g. {float(fractional.flat[0]):g}): it must "
                "hold integer lesion IDs (0 = background), not probabilities or intensities",
            )
    if low < 0:
        raise InputError(path, f"{what} holds negative label(s) (minimum {low:g}): lesion IDs are integers >= 0 (0 = background)")
    if high > MAX_LESION_ID:
        raise InputError(path, f"{what} holds label(s) above {MAX_LESION_ID} (maximum {high:g}): lesion IDs are at most 2**31-1")


MAX_PROMPT_MASK_FRACTION = 0.5


def check_prompt_mask_labels(labels: np.ndarray, path: str | Path) -> None:
    """Raise :class:`InputError` for a baseline prompt mask that marks no lesion (every voxel 0) or
    whose lesions cover more than half of the image (a body mask or an all-ones image, not lesions)."""
    nonzero = int(np.count_nonzero(labels))
    if nonzero == 0:
        raise InputError(path, "prompt mask is empty (every voxel is 0): it marks no lesion")
    fraction = nonzero / labels.size
    if fraction > MAX_PROMPT_MASK_FRACTION:
        raise InputError(
            path,
            f"prompt mask marks {fraction:.0%} of the image as lesion (more than {MAX_PROMPT_MASK_FRACTION:.0%}): "
            "it must hold lesion instance labels, not a body mask or an all-ones image",
        )


def write_prompts(prompts: PromptFile, path: str | Path) -> Path:
    """Write a prompt file atomically (sorted keys, stable float formatting)."""
    from lesionlocator.core.io import write_json

    return write_json(prompts.model_dump(mode="json", exclude_none=True), path)
