"""Lesion shapes and appearance.

A lesion's shape is a field ``g(u)`` over lesion-local coordinates ``u`` (mm, relative to the lesion
centre, in the lesion's own rotated frame, at its reference size): ``g < 0`` inside, ``g`` roughly
the signed distance to the surface in mm. Growth maps a world point ``y`` at session t to
``u = S_t^-1 R^T (y - c_t)`` (``S_t`` per-axis scale, ``R`` rotation, ``c_t`` centre), so the shape
keeps its identity while it grows, shrinks or vanishes.

* :class:`LobulatedShape` - a union of a main ellipsoid and a few lobes, its surface perturbed by
  a smooth random field (irregular, lobulated lesions).
* :class:`MaskShape` - an existing lesion from a label map (signed distance of its mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
