"""Lesion shapes and appearance.

A lesion's shape is a field ``g(u)`` over lesion-local coordinates ``u`` (mm, relative to the lesion
centre, in the lesion's own rotated frame, at its reference size): ``g < 0`` inside, ``g`` roughly
the signed distance to the surface in mm. Growth maps a world point ``y`` at session t to
``u = S_t^-1 R^T (y - c_t)`` (``S_t`` per-axis scale, ``R`` rotation, ``c_t`` centre), so the shape
keeps its identity while it grows, shrinks or vanishes.

* :class:`LobulatedShape` - a union of a main ellipsoid and a few lobes, its surface perturbed by
  a smooth random field (irregular, lobulated lesions).
* :class:`SplitShape` - two lobes joined by a bridge that is gone from a given session on (a
  lesion that splits into two separated parts).
* :class:`MaskShape` - an existing lesion from a label map (signed distance of its mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lesionlocator.core.io import Geometry

NOISE_GRID = 7  # control points per axis of the surface perturbation
NOISE_SPAN = 1.8  # the perturbation covers u / radius in [-NOISE_SPAN, NOISE_SPAN]


@dataclass
class LobulatedShape:
    """Union of ellipsoids (``centres``/``radii`` in mm) with a smooth surface perturbation."""

    radius: float  # mm, radius of the main ellipsoid's largest axis
    centres: np.ndarray  # (k, 3) mm
    radii: np.ndarray  # (k, 3) mm
    roughness: float  # perturbation amplitude relative to ``radius``
    noise: np.ndarray  # (NOISE_GRID,)*3 spline coefficients (prefiltered)

    @classmethod
    def random(cls, diameter_mm: float, rng: np.random.Generator) -> "LobulatedShape":
        radius = diameter_mm / 2.0
        main = radius * np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.65, 0.95)])
        centres, radii = [np.zeros(3)], [main]
        for _ in range(rng.integers(0, 4)):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            centres.append(direction * main * rng.uniform(0.35, 0.6))
            radii.append(main * rng.uniform(0.4, 0.65, size=3))
        noise = rng.normal(0.0, 1.0, size=(NOISE_GRID,) * 3)
        noise = ndimage.spline_filter(noise, order=3)
        return cls(radius, np.asarray(centres), np.asarray(radii), float(rng.uniform(0.05, 0.14)), noise)

    @property
    def extent(self) -> float:
        """Radius (mm) of a sphere around the centre that holds the whole shape."""
        reach = np.linalg.norm(self.centres, axis=1) + self.radii.max(axis=1)
        return float(reach.max() + self.roughness * self.radius * 2.5)

    def field(self, u: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm, < 0 inside) at local points ``u`` (N, 3)."""
        q = np.full(len(u), np.inf, dtype=np.float64)
        for centre, radii in zip(self.centres, self.radii):
            q = np.minimum(q, np.linalg.norm((u - centre) / radii, axis=1))
        coords = (u / self.radius + NOISE_SPAN) / (2 * NOISE_SPAN) * (NOISE_GRID - 1)
        perturbation = ndimage.map_coordinates(self.noise, coords.T, order=3, mode="nearest", prefilter=False)
        return (q - 1.0) * self.radius * 0.8 + perturbation * self.roughness * self.radius


def _perturbation(noise: np.ndarray, u: np.ndarray, radius: float) -> np.ndarray:
    """The smooth random surface perturbation (unit scale) at local points ``u`` (N, 3)."""
    coords = (u / radius + NOISE_SPAN) / (2 * NOISE_SPAN) * (NOISE_GRID - 1)
    return ndimage.map_coordinates(noise, coords.T, order=3, mode="nearest", prefilter=False)


@dataclass
class SplitShape:
    """Two ellipsoidal lobes on the local x axis (``centres``/``radii``, mm) joined by a bridge: a
    capsule (a cylinder with round ends) from one lobe centre to the other, of radius
    ``bridge_mm * widths[t]`` at session t (1: joined, 0: gone).

    Without the bridge the lobes lie at least ``gap_mm`` apart along the local x axis (at reference
    size; a session's scale multiplies it), so their masks are separated parts."""

    radius: float  # mm, half the overall length along the local x axis
    centres: np.ndarray  # (2, 3) mm, on the x axis, the first at +x
    radii: np.ndarray  # (2, 3) mm
    bridge_mm: float  # radius of the bridge at full width
    widths: list[float]  # per session: width factor of the bridge
    roughness: float  # perturbation amplitude relative to the smaller lobe's x radius
    noise: np.ndarray
    gap_mm: float  # separation of the lobes along x without the bridge, reference size

    @classmethod
    def random(
        cls, diameter_mm: float, widths: list[float], gap_mm: float, min_bridge_mm: float, rng: np.random.Generator,
        min_lobe_mm: float = 7.0,
    ) -> "SplitShape":
        """Lobes of about a quarter of ``diameter_mm`` (at least ``min_lobe_mm``) each, set apart until
        they are ``gap_mm`` apart without the bridge (checked on a 0.5 mm grid, surface noise
        included), and a bridge of at least ``min_bridge_mm`` radius."""
        first = max(min_lobe_mm, 0.25 * diameter_mm)
        second = first * rng.uniform(0.75, 1.0)
        radii = np.array([
            [first, first * rng.uniform(0.8, 1.0), first * rng.uniform(0.75, 1.0)],
            [second, second * rng.uniform(0.8, 1.0), second * rng.uniform(0.75, 1.0)],
        ])
        bridge = max(0.65 * float(radii[:, 1:].min()), min_bridge_mm)
        noise = ndimage.spline_filter(rng.normal(0.0, 1.0, size=(NOISE_GRID,) * 3), order=3)
        roughness = float(rng.uniform(0.03, 0.08))
        half = 0.5 * (first + second + gap_mm)
        for _ in range(100):
            shape = cls(half + max(first, second), np.array([[half, 0.0, 0.0], [-half, 0.0, 0.0]]), radii, bridge,
                        widths, roughness, noise, gap_mm)
            if shape.separation() >= gap_mm:
                return shape
            half += 0.5
        raise ValueError(f"split lesion: lobes {first:.1f} and {second:.1f} mm do not separate by {gap_mm:.1f} mm")

    @property
    def extent(self) -> float:
        reach = np.abs(self.centres[:, 0]) + self.radii.max(axis=1)
        return float(reach.max() + self.roughness * self.radii[:, 0].min() * 4.0)

    def field(self, u: np.ndarray, width: float) -> np.ndarray:
        """Approximate signed distance (mm, < 0 inside) at local points ``u`` (N, 3), the bridge at
        width factor ``width``."""
        q = np.full(len(u), np.inf, dtype=np.float64)
        for centre, radii in zip(self.centres, self.radii):
            q = np.minimum(q, (np.linalg.norm((u - centre) / radii, axis=1) - 1.0) * float(radii.min()))
        if width > 0:
            on_axis = np.zeros_like(u)
            on_axis[:, 0] = np.clip(u[:, 0], self.centres[1, 0], self.centres[0, 0])
            q = np.minimum(q, np.linalg.norm(u - on_axis, axis=1) - width * self.bridge_mm)
        return q + _perturbation(self.noise, u, self.radius) * self.roughness * float(self.radii[:, 0].min())

    def components(self, width: float, step_mm: float = 0.5) -> tuple[int, float]:
        """Connected parts (26-connectivity) of the shape at bridge width ``width`` on a ``step_mm``
        grid, and the gap (mm, along x) between its parts at x > 0 and at x < 0."""
        reach = self.extent
        axes = [np.arange(-reach, reach + step_mm, step_mm)] * 3
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        inside = (self.field(grid, width) < 0).reshape(len(axes[0]), len(axes[1]), len(axes[2]))
        labels = cc3d.connected_components(inside, connectivity=26)
        x = axes[0]
        filled = np.any(inside, axis=(1, 2))
        right, left = x[filled & (x > 0)], x[filled & (x < 0)]
        gap = float(right.min() - left.max() - step_mm) if right.size and left.size else 0.0
        return int(labels.max()), gap

    def separation(self, step_mm: float = 0.5) -> float:
        """Gap (mm, along x) between the lobes without the bridge: the width of the empty slab of x
        around the middle, on a ``step_mm`` grid over the space between the lobe centres (each lobe
        is one part; 0 when no slab is empty)."""
        x = np.arange(self.centres[1, 0], self.centres[0, 0] + step_mm, step_mm)
        side = np.arange(-1.0, 1.0 + 1e-9, step_mm / self.radii[:, 1:].max() / 1.5) * self.radii[:, 1:].max() * 1.5
        grid = np.stack(np.meshgrid(x, side, side, indexing="ij"), axis=-1).reshape(-1, 3)
        filled = np.any((self.field(grid, 0.0) < 0).reshape(len(x), -1), axis=1)
        if filled[len(x) // 2] or not (filled[0] and filled[-1]):
            return 0.0
        middle = len(x) // 2
        right = middle + int(np.argmax(filled[middle:]))
        left = middle - int(np.argmax(filled[middle::-1]))
        return float(x[right] - x[left] - step_mm)


@dataclass
class MaskShape:
    """An existing lesion: signed distance (mm) of its mask, sampled in world space."""

    sdf: np.ndarray  # (z, y, x) float32 on a crop of the source grid
    geometry: Geometry  # the crop's geometry
    centre: np.ndarray  # world mm of the lesion centroid (u = 0)
    radius: float

    @classmethod
    def from_mask(cls, mask: np.ndarray, geometry: Geometry, pad: int = 4) -> "MaskShape":
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        lo = [max(s.start - pad, 0) for s in box]
        hi = [min(s.stop + pad, n) for s, n in zip(box, mask.shape)]
        crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        spacing_zyx = geometry.spacing[::-1]
        inside = ndimage.distance_transform_edt(crop, sampling=spacing_zyx)
        outside = ndimage.distance_transform_edt(~crop, sampling=spacing_zyx)
        sdf = (outside - inside).astype(np.float32)
        sdf[crop] += 0.5 * min(spacing_zyx)
        sdf[~crop] -= 0.5 * min(spacing_zyx)
        origin = geometry.index_to_world(np.asarray(lo, dtype=float))
        crop_geometry = Geometry(tuple(int(n) for n in crop.shape[::-1]), geometry.spacing, tuple(origin.tolist()), geometry.direction)
        centre = geometry.index_to_world(np.argwhere(mask).mean(axis=0))
        radius = float((3 * crop.sum() * np.prod(geometry.spacing) / (4 * np.pi)) ** (1 / 3))
        return cls(sdf, crop_geometry, centre, radius)

    @property
    def extent(self) -> float:
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.sdf.shape], indexing="ij")).reshape(3, -1).T
        return float(np.linalg.norm(self.geometry.index_to_world(corners) - self.centre, axis=1).max())

    def field(self, u: np.ndarray) -> np.ndarray:
        index = self.geometry.world_to_index(u + self.centre)
        return ndimage.map_coordinates(self.sdf, index.T, order=1, mode="constant", cval=float(self.sdf.max()))


@dataclass
class Appearance:
    """How a lesion looks. ``kind``: ``absolute`` (value in image units), ``relative`` (CT: HU offset
    from the local tissue ``reference``; MR: factor of it) or ``sample`` (the source image itself,
    an existing lesion)."""

    kind: str
    value: float
    reference: float = 0.0
    modality: str = "CT"
    texture: float = 10.0  # standard deviation of the internal texture, image units
    mix: float = 0.15  # fraction of the underlying tissue's variation kept inside the lesion
    necrosis: float = 0.0  # extra offset (CT) / factor (MR) in the core; 0 = none
    edge_mm: float = 1.0  # extra blur of the border (infiltrative margin), mm
    source: np.ndarray | None = field(default=None, repr=False)  # sample: the image with the lesion
    source_geometry: Geometry | None = None
    centre: np.ndarray | None = None

    def base(self) -> float:
        if self.kind == "absolute":
            return self.value
        if self.modality == "CT":
            return self.reference + self.value
        return self.reference * self.value

    def values(self, u: np.ndarray, depth: np.ndarray, healthy: np.ndarray, texture: np.ndarray) -> np.ndarray:
        """Intensities at local points ``u`` (N, 3) whose signed distance is ``depth`` (mm, < 0
        inside), over tissue ``healthy`` (N,), with unit texture noise ``texture`` (N,)."""
        if self.kind == "sample":
            index = self.source_geometry.world_to_index(u + self.centre)
            return ndimage.map_coordinates(self.source, index.T, order=1, mode="nearest")
        base = self.base()
        values = base + self.texture * texture + self.mix * (healthy - self.reference)
        if self.necrosis:
            core = np.clip((-depth - 4.0) / 4.0, 0.0, 1.0)
            if self.modality == "CT":
                values = values + core * self.necrosis
            else:
                values = values * (1.0 + core * (self.necrosis - 1.0))
        return values


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    return Rotation.from_quat(rng.normal(size=4)).as_matrix()


def ct_appearance(site: str, reference: float, rng: np.random.Generator, radius: float) -> Appearance:
    """A CT lesion look for ``site``, at least 30 HU from the local tissue ``reference``: solid
    nodules in the lung, soft-tissue masses in fat, and hypo- (mostly) or hyper-attenuating lesions
    in solid organs and muscle."""
    necrosis = float(rng.uniform(-45, -25)) if radius > 10 and rng.random() < 0.4 else 0.0
    if site == "lung" or reference < -300:
        return Appearance("absolute", float(rng.uniform(10, 45)), reference=reference, texture=12.0, mix=0.0,
                          edge_mm=float(rng.uniform(0.3, 1.0)), necrosis=necrosis)
    if reference < -30:  # fat: a soft-tissue mass (lymph node, implant)
        return Appearance("absolute", float(rng.uniform(20, 50)), reference=reference, texture=10.0, mix=0.05,
                          edge_mm=float(rng.uniform(0.5, 1.5)), necrosis=necrosis)
    hyper = rng.random() < 0.25
    offset = float(rng.uniform(30, 50)) if hyper else -float(rng.uniform(40, 80))
    return Appearance("relative", offset, reference=reference, texture=8.0, mix=0.15,
                      edge_mm=float(rng.uniform(0.8, 2.5)), necrosis=necrosis)


def mr_appearance(reference: float, rng: np.random.Generator, radius: float) -> Appearance:
    """An MR lesion look: a factor of the local tissue signal (hyper- or hypo-intense)."""
    factor = float(rng.uniform(1.5, 2.2)) if rng.random() < 0.6 else float(rng.uniform(0.35, 0.6))
    necrosis = float(rng.uniform(1.3, 1.6)) if radius > 10 and rng.random() < 0.4 else 0.0
    return Appearance("relative", factor, reference=reference, modality="MR", texture=0.06 * reference,
                      mix=0.1, edge_mm=float(rng.uniform(0.8, 2.0)), necrosis=necrosis)


def local_reference(array: np.ndarray, site_mask: np.ndarray, index_zyx: np.ndarray, radius_vox: np.ndarray) -> float:
    """Median intensity of the site's tissue around a voxel (the lesion's background)."""
    lo = np.maximum(np.floor(index_zyx - radius_vox).astype(int), 0)
    hi = np.minimum(np.ceil(index_zyx + radius_vox).astype(int) + 1, array.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    values = array[box][site_mask[box]]
    if values.size < 5:
        values = array[box]
    return float(np.median(values))
