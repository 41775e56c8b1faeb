"""Prompt simulation: each prompt describes the picked lesion, the target is that lesion only."""

from __future__ import annotations

import numpy as np
import pytest

from lesionlocator.train.simulate import (
    PROMPT_KINDS,
    choose_lesion,
    encode_prompt,
    sample_kind,
    simulate_box,
    simulate_mask,
    simulate_point,
    simulate_prompt,
)


@pytest.mark.parametrize("seed", range(5))
def test_point_lies_inside_lesion(seed, two_lesions):
    lesion = choose_lesion(two_lesions(seed), np.random.default_rng(seed))
    for _ in range(20):
        assert lesion[simulate_point(lesion, np.random.default_rng(seed + _))]


@pytest.mark.parametrize("seed", range(5))
def test_box_contains_lesion(seed, two_lesions):
    lesion = choose_lesion(two_lesions(seed), np.random.default_rng(seed))
    where = np.argwhere(lesion)
    grew = False
    for i in range(20):
        lo, hi = simulate_box(lesion, np.random.default_rng(100 * seed + i), noise=0.2)
        assert np.all(np.asarray(lo) <= where.min(0)) and np.all(np.asarray(hi) >= where.max(0))
        assert np.all(np.asarray(lo) >= 0) and np.all(np.asarray(hi) < lesion.shape)
        grew |= bool(np.any(np.asarray(lo) < where.min(0)) or np.any(np.asarray(hi) > where.max(0)))
    assert grew, "box jitter never moved a face"


def test_box_shrink_moves_faces_both_ways_within_bounds():
    lesion = np.zeros((40, 40, 40), bool)
    lesion[10:30, 12:22, 5:35] = True  # extents 20, 10, 30 (z, y, x)
    lo0, hi0 = np.array([10, 12, 5]), np.array([29, 21, 34])
    extent = hi0 - lo0 + 1
    grow, inward = np.ceil(0.1 * extent), np.ceil(0.2 * extent)
    moves = []
    for i in range(200):
        lo, hi = (np.asarray(c) for c in simulate_box(lesion, np.random.default_rng(i), noise=0.1, shrink=0.2))
        out_lo, out_hi = lo0 - lo, hi - hi0  # > 0: the face moved outwards
        for move in (out_lo, out_hi):
            assert np.all(move <= grow) and np.all(move >= -inward)
        moves.append(np.concatenate([out_lo, out_hi]))
    moves = np.array(moves)
    assert (moves < 0).any(axis=0).all() and (moves > 0).any(axis=0).all()  # every face went both ways
    # The default (no shrink) keeps every box around the lesion: the case above is covered by
    # test_box_contains_lesion; here, the same draws without shrink never cut the lesion.
    for i in range(50):
        lo, hi = simulate_box(lesion, np.random.default_rng(i), noise=0.1)
        assert np.all(np.asarray(lo) <= lo0) and np.all(np.asarray(hi) >= hi0)


def test_box_shrink_never_empties_a_small_box():
    lesion = np.zeros((10, 10, 10), bool)
    lesion[4:6, 4, 3:7] = True  # extents 2, 1, 4
    for i in range(200):
        lo, hi = simulate_box(lesion, np.random.default_rng(i), noise=0.0, shrink=0.49)
        assert np.all(np.asarray(lo) <= np.asarray(hi))
        assert lesion[tuple(slice(a, b + 1) for a, b in zip(lo, hi))].any()


@pytest.mark.parametrize("seed", range(5))
def test_mask_prompt_overlaps_lesion_but_differs(seed, two_lesions):
    lesion = choose_lesion(two_lesions(seed), np.random.default_rng(seed))
    changed = 0
    for i in range(10):
        mask = simulate_mask(lesion, np.random.default_rng(10 * seed + i))
        assert (mask & lesion).any()
        changed += int(not np.array_equal(mask, lesion))
    assert changed >= 5


def test_tiny_lesion_mask_never_vanishes(two_lesions):
    lesion = np.zeros((12, 12, 12), bool)
    lesion[6, 6, 6] = True
    for i in range(20):
        assert (simulate_mask(lesion, np.random.default_rng(i)) & lesion).any()


@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_target_is_the_prompted_lesion_only(kind, two_lesions):
    seg = two_lesions()
    picked = set()
    for seed in range(12):
        sim = simulate_prompt(seg, kind, np.random.default_rng(seed))
        assert sim.kind == kind
        target = sim.target
        assert target.any() and (seg[target] == 1).all()
        assert target.sum() in (int(c) for c in np.unique(__import__("cc3d").connected_components(seg), return_counts=True)[1][1:])
        channel = encode_prompt(sim, seg.shape)
        assert channel.dtype == np.float32 and set(np.unique(channel)) <= {0.0, 1.0}
        other = (seg > 0) & ~target
        # The prompt channel covers the picked lesion more than the other one.
        assert channel[target].mean() > channel[other].mean()
        picked.add(int(np.argwhere(target)[0][0] > 14))
    assert picked == {0, 1}, "both lesions should get picked over 12 seeds"


def test_box_channel_contains_lesion(two_lesions):
    seg = two_lesions()
    sim = simulate_prompt(seg, "box", np.random.default_rng(3))
    assert encode_prompt(sim, seg.shape)[sim.target].all()


def test_empty_patch_gives_no_prompt(two_lesions):
    assert simulate_prompt(np.zeros((8, 8, 8), np.uint8), "point", np.random.default_rng(0)) is None


@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_simulation_is_deterministic_for_a_seed(kind, two_lesions):
    seg = two_lesions()
    a = simulate_prompt(seg, kind, np.random.default_rng(42))
    b = simulate_prompt(seg, kind, np.random.default_rng(42))
    assert np.array_equal(encode_prompt(a, seg.shape), encode_prompt(b, seg.shape))
    assert np.array_equal(a.target, b.target)
    results = {encode_prompt(simulate_prompt(seg, kind, np.random.default_rng(s)), seg.shape).tobytes() for s in range(6)}
    assert len(results) > 1, "different seeds should give different prompts"


def test_sample_kind_follows_mix(two_lesions):
    rng = np.random.default_rng(0)
    draws = [sample_kind({"point": 0.0, "box": 1.0, "mask": 3.0}, rng) for _ in range(400)]
    assert "point" not in draws
    assert 0.65 < draws.count("mask") / len(draws) < 0.85
    with pytest.raises(ValueError):
        sample_kind({"point": 0.0}, rng)
