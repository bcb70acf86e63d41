"""A DSM from three or more views: pairs chosen, each pair's tiles, fused per cell.

Pairs (:func:`plan_multiview`): every pair of views that :func:`ops.stereo.pair.plan_stereo`
accepts (same mission, overlapping, a base-to-height ratio large enough),
with B/H in ``[min_b_over_h, max_b_over_h]`` (a narrow base gives noisy
heights, a wide one many occlusions and unlike images) and an overlap of
at least ``min_overlap_share`` of the largest pair's, best B/H first, at
most ``max_pairs``; or the pairs the caller gives. All pairs share one output
grid: the union of their overlaps, on the lattice of the output CRS and GSD
(the first pair's unless given). Each pair's weight is its B/H squared (a
height's standard deviation is the disparity's over B/H).

Each pair's vertical offset is estimated once, at planning time, on a
central sample of the grid (:func:`ops.stereo.dsm_fusion.estimate_offsets`), so
that every tile removes the same offsets; then each output tile is computed
pair by pair (:func:`ops.stereo.pair.run_dsm_tile`, the two-view kernel
unchanged) and fused (:func:`fuse_pair_tiles`). A campaign runs the same
steps as a DAG (:mod:`planner.stages`): per output tile, each pair's
``stereo`` and ``dsm`` tasks, then one ``fusion`` task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ops.errors import StereoError
from ops.stereo.dsm_fusion import FusionStats, estimate_offsets, fuse_tiles
from ops.stereo.pair import (
    DsmTile,
    StereoConfig,
    StereoPlan,
    StereoView,
    Terrain,
    Undulation,
    assemble_tiles,
    plan_stereo,
    run_dsm_tile,
)
from planner.geometry.grid import GeoBox, TileGrid, Window

#: Side (cells) of the central sample the pairs' offsets are estimated on.
OFFSET_SAMPLE_CELLS = 256


@dataclass(frozen=True, slots=True)
class MultiViewPlan:
    """The pairs of a multi-view product, their common grid, weights and offsets."""

    pairs: tuple[tuple[int, int], ...]
    plans: tuple[StereoPlan, ...]
    geobox: GeoBox
    weights: tuple[float, ...]
    offsets_m: tuple[float, ...]
    rejected: tuple[str, ...] = ()


def _union(boxes: Sequence[GeoBox]) -> GeoBox:
    lefts, rights, tops, bottoms = [], [], [], []
    for b in boxes:
        a, _, c, _, e, f = b.transform
        lefts.append(c)
        rights.append(c + a * b.width)
        tops.append(f)
        bottoms.append(f + e * b.height)
    res = boxes[0].transform[0]
    return GeoBox.from_bounds(boxes[0].crs, min(lefts), min(bottoms), max(rights), max(tops), res)


def plan_multiview(
    views: Sequence[StereoView],
    dem: Terrain,
    *,
    crs: str | None = None,
    gsd_m: float | None = None,
    config: StereoConfig | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    min_b_over_h: float = 0.05,
    max_b_over_h: float = 1.0,
    max_pairs: int = 6,
    min_overlap_share: float = 0.25,
) -> MultiViewPlan:
    """Choose (or take) the pairs, plan each on one grid, estimate their offsets."""
    if len(views) < 2:
        raise StereoError(f"{len(views)} view(s); expected at least two images")
    candidates = list(pairs) if pairs is not None else [
        (i, j) for i in range(len(views)) for j in range(i + 1, len(views))
    ]
    for i, j in candidates:
        if not (0 <= i < len(views) and 0 <= j < len(views) and i != j):
            raise StereoError(f"pair ({i}, {j}) of {len(views)} views; expected two distinct "
                              f"indices in 0..{len(views) - 1}")
    accepted: list[tuple[tuple[int, int], StereoPlan]] = []
    rejected: list[str] = []
    for i, j in candidates:
        try:
            plan = plan_stereo(views[i], views[j], dem, crs=crs, gsd_m=gsd_m, config=config)
        except StereoError as exc:
            if pairs is not None:
                raise
            rejected.append(f"{views[i].path} + {views[j].path}: {exc}")
            continue
        bh = plan.frame.base_to_height
        if pairs is None and not min_b_over_h <= bh <= max_b_over_h:
            rejected.append(f"{views[i].path} + {views[j].path}: B/H {bh:.3f} outside "
                            f"[{min_b_over_h}, {max_b_over_h}]")
            continue
        if crs is None or gsd_m is None:  # every later pair on the first one's lattice
            crs, gsd_m = plan.geobox.crs, plan.geobox.resolution[0]
        accepted.append(((i, j), plan))
    if not accepted:
        raise StereoError("no pair of the views can make a DSM: " + "; ".join(rejected))
    if pairs is None:
        largest = max(p.geobox.height * p.geobox.width for _, p in accepted)
        for (i, j), p in accepted:
            if p.geobox.height * p.geobox.width < min_overlap_share * largest:
                rejected.append(f"{views[i].path} + {views[j].path}: overlap under "
                                f"{min_overlap_share:.0%} of the largest pair's")
        accepted = [(ij, p) for ij, p in accepted
                    if p.geobox.height * p.geobox.width >= min_overlap_share * largest]
    accepted.sort(key=lambda item: -item[1].frame.base_to_height)
    accepted = accepted[:max_pairs]
    plans = tuple(p for _, p in accepted)
    geobox = _union([p.geobox for p in plans])
    weights = tuple(p.frame.base_to_height ** 2 for p in plans)
    offsets = _sample_offsets(plans, geobox, weights, dem)
    return MultiViewPlan(tuple(ij for ij, _ in accepted), plans, geobox, weights, offsets,
                         tuple(rejected))


def _sample_offsets(plans: Sequence[StereoPlan], geobox: GeoBox, weights: Sequence[float],
                    dem: Terrain) -> tuple[float, ...]:
    if len(plans) == 1:
        return (0.0,)
    size_r = min(OFFSET_SAMPLE_CELLS, geobox.height)
    size_c = min(OFFSET_SAMPLE_CELLS, geobox.width)
    sample = geobox.window_geobox(Window((geobox.height - size_r) // 2,
                                         (geobox.width - size_c) // 2, size_r, size_c))
    tiles = [run_dsm_tile(plan, sample, dem) for plan in plans]
    return estimate_offsets(tiles, weights)


def fuse_pair_tiles(mplan: MultiViewPlan, tiles: Sequence[DsmTile]
                    ) -> tuple[DsmTile, FusionStats]:
    """The pairs' DSM tiles of one output tile (in ``mplan.plans`` order), fused per cell."""
    if len(tiles) != len(mplan.plans):
        raise StereoError(f"{len(tiles)} pair tiles to fuse, expected one per pair "
                          f"({len(mplan.plans)})")
    return fuse_tiles(tiles, mplan.weights, mplan.offsets_m)


def run_fused_tile(
    mplan: MultiViewPlan, tile: GeoBox, dem: Terrain, geoid: Undulation | None = None
) -> tuple[DsmTile, FusionStats]:
    """Every pair's DSM of one output tile, fused (a campaign's stereo, dsm and fusion tasks)."""
    return fuse_pair_tiles(mplan, [run_dsm_tile(plan, tile, dem, geoid) for plan in mplan.plans])


def iter_fused_tiles(
    mplan: MultiViewPlan,
    dem: Terrain,
    *,
    tile_px: int = 512,
    geoid: Undulation | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Window, DsmTile]]:
    """Every tile of the common grid, fused, row-major."""
    grid = TileGrid(mplan.geobox, tile_px, tile_px)
    n = len(grid)
    for k, idx in enumerate(grid.tiles()):
        tile, _ = run_fused_tile(mplan, grid.tile_geobox(idx), dem, geoid)
        if on_tile is not None:
            on_tile(k + 1, n)
        yield grid.window(idx), tile


def assemble_fused(mplan: MultiViewPlan, dem: Terrain, *, tile_px: int = 512,
                   geoid: Undulation | None = None) -> DsmTile:
    """The whole fused product in memory (tests, small scenes)."""
    return assemble_tiles(mplan.geobox.shape,
                          iter_fused_tiles(mplan, dem, tile_px=tile_px, geoid=geoid),
                          "no cell where the pairs agree")
