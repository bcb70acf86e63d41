"""Dense matching of a rectified pair: semi-global matching, consistency, confidence.

The matcher is OpenCV's ``StereoSGBM`` (Hirschmüller, "Stereo processing by
semiglobal matching and mutual information", IEEE PAMI 2008), by default in
its 5-path single-pass mode (``"sgbm"``: costs aggregated along 5 directions
with buffers of one image row, O(width x disparities) memory; ``"hh"``, the
full 8 paths, keeps the whole cost volume, O(width x height x disparities),
and ``"3way"`` uses 3 paths). Its pixel cost is Birchfield-Tomasi on a
horizontally Sobel-filtered, clipped image (``preFilterCap``), which ignores
an additive radiometric offset between the views; costs are summed over
``block_size``² pixels, and the smoothness penalties ``P1`` (disparity steps
of 1) and ``P2`` (larger jumps) are 12 and 96 times the block area (P1 8
until session 8: below).

The first defaults came from a sweep on the real Gizeh pair (block size
3/5/7, P1/P2, uniqueness, NCC threshold, path modes), judged by coverage, by
the number of heights above the Great Pyramid's apex (impossible values)
and by the self-consistency NCC of :mod:`ops.evaluation.stereo_eval`: 8 paths with
3 x 3 blocks won then (coverage 96.7 %, 243 impossible cells against 554
for the 3-path, 5 x 5 matcher). With the true left-right check below, 5
paths do better on blunders in every case at hand and need a fraction of
the memory (``python -m benchmarks.stereo``, DSM std / p99 of |error -
median| / share beyond 3 m / coverage / peak memory, 8 -> 5 paths): urban
synthetic pair 3.59 / 21.5 m / 3.40 % / 82.2 % / 1.48 GiB -> 3.44 / 18.5 m
/ 2.89 % / 80.8 % / 0.48 GiB (CARS 1.3.0 needs 1.03 GiB); synthetic with
defects 0.99 / 3.69 m / 1.46 % / 93.1 % / 0.87 GiB -> 1.03 / 3.82 m / 1.49
% / 92.5 % / 0.43 GiB; Ventoux against CARS 1.00 / 3.36 m / 1.63 % / 95.5
% -> 0.93 / 3.14 m / 1.26 % / 95.3 %; Gizeh 0.78 -> 0.52 GiB, 85.7 ->
84.3 % covered.

Post-processing, the first four inside OpenCV's implementation:

* sub-pixel disparities by a parabola through the costs at d-1, d, d+1
  (returned in 1/16 pixel); that parabola is biased towards whole pixels
  ("pixel locking": up to 0.24 px on a pair whose true disparity is known),
  so SGBM runs a second time on the right image shifted half a pixel, where
  the bias changes sign, and the two estimates are averaged (Shimizu and
  Okutomi 2005; ``"halfshift"``). That leaves a bias of +/-0.09 px, periodic
  in the fraction, which the default (``"halfshift+ncc"``) removes: each
  estimate moves to the peak of the NCC of ``refine_window_px``² windows
  sampled a quarter pixel either side (bicubic shifts), and the
  corrections are averaged over ``refine_smooth_px``² pixels (the bias
  varies slowly, the NCC peak's noise does not; taken pixel by pixel it
  doubled the height noise between neighbours at Gizeh's B/H of 0.085),
  each weighted by its windows' NCC to the power ``refine_ncc_power`` and
  divided by the count, so that poorly matched neighbourhoods keep less of
  it (session 7: the relief of Ventoux, below).
  Measured on real textures (Gizeh, Ventoux, a synthetic view) shifted
  by every tenth of a pixel in Fourier space, NMAD of the disparity error:
  0.17 px (SGBM), 0.056-0.083 px (half-pixel shift), 0.029-0.060 px
  (default); DSM NMAD against the truth of synthetic pairs: clean 0.270 ->
  0.242 m (0.266 -> 0.220 m with the DEM raised 1 m), with defects 0.285 ->
  0.250 m (B/H 0.1: 0.663 -> 0.586 m). ``"sgbm"`` and ``"ncc"`` (the NCC
  refinement of SGBM's own estimate) remain for comparison. With 5 x 5
  blocks, DSM NMAD against the truth (synthetic / with defects / urban)
  and against CARS (Gizeh / Ventoux), half-pixel shift alone: 0.260 /
  0.202 / 0.297 / 1.002 / 0.584 m; default with the corrections averaged
  over 5², 9², 15², 21² pixels: 0.198 / 0.180 / 0.337 / 1.007 / 0.677,
  0.191 / 0.172 / 0.316 / 0.968 / 0.662, 0.194 / 0.170 / 0.297 / 0.960 /
  0.646 (the default, 15²), 0.202 / 0.173 / 0.290 / 0.967 / 0.637 m. The
  truth prefers the refinement (CARS, nearer the half-pixel shift on
  Ventoux, has its own sub-pixel bias);
* a uniqueness test (best cost ``uniqueness_ratio`` % better than the second);
* OpenCV's left-right consistency check (``disp12MaxDiff``): the disparity
  of the right pixel the left pixel lands on, computed from the same cost
  volume, must agree within ``lr_max_diff_px``. On the rectified Gizeh pair
  it drops nothing (99.5 % of pixels valid with and without it);
* speckle removal: connected blobs of fewer than ``speckle_window_px``
  pixels differing from their surroundings are dropped;
* a true left-right check (``cross_check_px``; 0 turns it off): SGBM runs a
  second time, right view against left, and where that pass has an answer
  the two disparities must agree within ``cross_check_px`` (occlusions
  beside buildings and matches dragged onto the wrong surface get a
  different answer from the other side);
* a texture mask: pixels whose left neighbourhood has a standard deviation
  below ``min_texture_std`` grey levels carry no information and are
  invalidated (SGM would otherwise propagate a plausible but invented
  surface across them);
* a median check: a disparity more than ``median_max_diff_px`` from the
  median of its valid 3 x 3 neighbourhood is dropped;
* a confidence: the normalised cross-correlation of the two
  ``ncc_window_px``² neighbourhoods the final disparity pairs up (1 is a
  perfect match), used as a quality band and to drop matches below
  ``min_ncc``;
* a discontinuity check: where the valid disparities of a match's
  ``edge_window_px``² neighbourhood span more than ``edge_step_px`` (a
  roof's edge and the ground beside it, whose matching windows straddle
  both surfaces), the match needs an NCC of ``edge_min_ncc`` instead of
  ``min_ncc`` (measured below);
* optionally (``min_component_px``), connected blobs of fewer pixels left
  after all of the above are dropped;
* a support check: a match is kept only where at least ``min_support``
  of the informative pixels (inside the footprint, textured) of its
  ``support_window_px``² neighbourhood kept theirs through every filter
  above. Blunders come in neighbourhoods the filters already riddled
  (occlusions beside buildings, shadows, water): on the urban synthetic
  pair, 87 % of the matches whose height misses the truth by more than 2
  m (beyond the truth's range within 1 m, so that a roof edge's position
  does not count) had over 30 % of their 9 x 9 neighbourhood rejected,
  against 9 % of the good ones; the NCC tells them apart less well (31
  % of the blunders have NCC 0.5-0.6, 12 % of the matches there).

The blunder defaults (``cross_check_px`` 1, ``min_ncc`` 0.3; before: no
second pass, 0.2) were measured on every case at hand, DSM against the
truth (synthetic) or against CARS (real), std (m) / p99 of |error -
median| (m) / share beyond 3 m / coverage: synthetic with defects, B/H
0.25: 1.09 / 4.66 / 2.65 % / 93.0 % -> 1.00 / 4.33 / 2.26 % / 92.0 %; the
same at B/H 0.1: 1.36 / 5.69 / 2.95 % / 87.7 % -> 1.32 / 5.36 / 2.69 % /
87.3 %; Gizeh: 1.47 / 4.91 / 4.09 % / 87.8 % -> 1.46 / 4.80 / 3.92 % /
87.2 %; Ventoux: 1.00 / 3.39 / 1.72 % / 96.8 % -> 0.98 / 3.31 / 1.54 % /
96.4 %; NMAD a little lower in every case. Larger NCC windows (7 to 11
pixels) cost more coverage than they removed blunders.

``min_ncc`` 0.4 (with the raster's smooth-source edge fill and
100-cell clusters, :mod:`ops.stereo.rasterize`): the share of blunders
among the cells kept falls steadily with their NCC (synthetic urban pair:
15 % below 0.4, 12 % at 0.4-0.5, 0.1 % above 0.9), and without any NCC
threshold that pair's std doubles (3.4 -> 5.3 m). All three together,
std / p99 / blunder share / coverage, before -> after: urban synthetic
3.44 / 18.5 m / 2.89 % / 80.8 % -> 2.83 / 10.2 m / 2.13 % / 79.0 %;
synthetic with defects 1.03 / 3.82 m / 1.49 % / 92.5 % -> 0.83 / 2.91 m /
0.95 % / 91.1 %; Gizeh against CARS 1.43 / 4.70 m / 3.82 % / 84.3 % ->
1.39 / 4.42 m / 3.38 % / 81.7 %; Ventoux 0.93 / 3.14 m / 1.26 % / 95.3 %
-> 0.93 / 3.11 m / 1.19 % / 94.4 %; NMAD equal or lower in every case.

5 x 5 blocks and ``min_ncc`` 0.5 (before: 3 x 3, 0.4; with the
Gaussian rasterisation of :mod:`ops.stereo.rasterize`), NMAD / std / p99 /
blunder share / coverage, against the truth or CARS: synthetic 0.218 /
0.62 / 0.69 m / 0.21 % / 98.0 % -> 0.191 / 0.66 / 0.62 m / 0.21 % / 98.0
%; with defects 0.210 / 0.87 / 2.93 m / 0.95 % / 91.3 % -> 0.172 / 0.84
/ 2.42 m / 0.67 % / 90.5 %; urban 0.358 / 2.90 / 10.6 m / 2.17 % / 79.1
% -> 0.316 / 2.53 / 9.3 m / 1.76 % / 77.1 %; Gizeh 1.060 / 1.37 / 4.57 m
/ 3.31 % / 83.2 % -> 0.968 / 1.33 / 4.44 m / 2.78 % / 84.9 %; Ventoux
0.704 / 0.89 / 3.02 m / 1.04 % / 94.6 % -> 0.662 / 0.83 / 2.79 m / 0.69 %
/ 95.4 %. The larger block averages the matcher's noise (NMAD) and the
stricter NCC removes what it drags across edges. 7 x 7 blocks lowered
NMAD further (0.171 / 0.153 / 0.299 / 0.939 / 0.633 m) but the urban
pair's std rose to 2.82 m; P1/P2 doubled lowered NMAD as much and lost a
third of the roofs (urban std 3.63 m). Not kept either: matches of NCC 0.3
to 0.5 accepted where they agree (0.5 px) with the mean of the NCC >= 0.5
matches of their 9 x 9 neighbourhood raised Gizeh's coverage 85.4 -> 87.7
% but its std 1.32 -> 1.37 m and the urban pair's 2.46 -> 3.06 m.

The support check (9 x 9, 0.7), with the inward border fill of
:mod:`ops.stereo.rasterize`, NMAD / std / blunder share / coverage, against
the truth or CARS 1.3.0, before -> after (the cases of ``python -m
benchmarks.stereo``, run in process): urban 0.297 / 2.46 m / 1.70 % /
77.0 % -> 0.276 / 0.68 m / 0.18 % / 68.5 %; with defects 0.170 / 0.90 m /
0.59 % / 90.4 % -> 0.164 / 0.38 m / 0.12 % / 86.5 %; synthetic 0.194 /
0.69 m / 0.21 % / 98.0 % -> 0.194 / 0.42 m / 0.10 % / 96.7 %; Gizeh 0.960
/ 1.32 m / 2.72 % / 85.4 % -> 0.931 / 1.19 m / 1.95 % / 78.6 %; Ventoux
0.646 / 0.81 m / 0.63 % / 95.3 % -> 0.641 / 0.79 m / 0.56 % / 88.3 %. It
trades coverage for std: with the earlier fill, a share of 0.5 / 0.6 /
0.7 gave the urban pair a std of 1.82 / 1.52 / 1.22 m and Gizeh a
coverage of 84.3 / 82.7 / 79.5 %; a 15 x 15 window at 0.6, 1.39 m and
82.0 %; exempting matches of NCC >= 0.8 (0.9) from it, 1.44 (1.32) m and
81.0 (80.2) %. Roofs stay the urban pair's weak part: every filter off
but an NCC of 0.2 measured 59 % of the roofs away from their edges, 14 %
of it blunders (SGM's smoothness carries the ground's disparity onto
small roofs; the scene's texture runs on across roof lines).

7 x 7 blocks (before: 5 x 5), once the support check removes what larger
blocks drag across edges (without it they raised the urban std, above),
same measures: urban 0.257 / 0.59 m / 0.16 % / 67.5 %; with defects 0.141
/ 0.39 m / 0.10 % / 85.9 %; synthetic 0.170 / 0.41 m / 0.10 % / 96.3 %;
Gizeh 0.901 / 1.11 m / 1.71 % / 78.7 %; Ventoux 0.602 / 0.73 m / 0.46 % /
86.9 %. The Gizeh cells the support check drops (6 % of the overlap) were
10.8 % beyond 3 m of CARS (NMAD 1.50 m), those it keeps 1.7 % (0.90 m). 9 x 9
lowered NMAD further (0.245 / 0.128 / 0.152 / 0.899 / 0.572
m) for coverage (urban 66.3 %, its roofs 34 -> 31 %, Ventoux 84.5 %) and
smooths relief finer than 4.5 m, which no case here has a truth for. On
the synthetic pair the matcher's error is noise, not bias: its points'
NMAD is 0.10 px in every tenth of the disparity's fraction (bias within
+/-0.015 px), from views point-sampled up to Nyquist (``benchmarks.stereo``).

Local contrast before the 8-bit rounding (:func:`to_grey_levels`,
``contrast_*``): SGBM takes 8-bit images, and the global stretch of a view
(0.1-99.9 percentiles) leaves low-contrast ground a few grey levels of
texture (the urban synthetic pair's ground: local standard deviation 5
levels in 7 x 7, its median grey 227 of 255, the stretch set by shadows
and bright roofs; bright sand, concrete or snow in real views, where the
square root flattens the stretch), so rounding, not the matcher, sets the
precision there. CARS's census runs on the float image. A Wallis stretch that only raises contrast (gain 12 / local
standard deviation over 31 x 31, clipped to [1, 2]) before rounding:
sub-pixel error on real textures (Gizeh, Ventoux) warped by a known smooth
disparity field (pixel integration, noise; ``python -m benchmarks.stereo
--subpixel``), NMAD / share matched, contrast x0.15: 0.080 px / 17.5 % ->
0.054 px / 55.8 % (Gizeh), 0.057 / 70.7 % -> 0.045 / 87.2 % (Ventoux);
full contrast unchanged (0.050 / 0.044 px). The same run shows the pixel
locking of SGBM's parabola (median error -0.09 to +0.15 px across the
fraction), the half-pixel shift's remaining +0.03 px offset, and the
default's bias within +/-0.01 px (+/-0.03 px at low contrast). DSM NMAD / std / blunder
share / coverage against the truth or CARS, before -> after: urban 0.257 /
0.59 m / 0.16 % / 67.5 % -> 0.120 / 0.72 m / 0.29 % / 72.1 % (roofs
covered 34 -> 57 %, their NMAD 0.227 -> 0.120 m; the std rises with the
roof edges now covered, 18 % of them blunders as before); with defects
0.141 / 0.39 / 0.10 / 85.9 -> 0.140 / 0.39 / 0.10 / 86.1; synthetic 0.170 /
0.41 m unchanged; Gizeh 0.898 / 1.11 / 1.67 / 78.7 -> 0.897 / 1.10 / 1.65
/ 78.7; Ventoux unchanged. On the real pairs with half their radiometry made
low-contrast (a tone curve compressing it x0.15, the same on both views;
DSM against CARS on the originals), gain 1 -> 2: bright half, Gizeh
coverage 57.8 -> 63.9 % at NMAD 0.950 -> 0.956 m and std 1.13 -> 1.14 m,
Ventoux 76.0 -> 76.5 %; dark half, nothing changes (Gizeh 77.7 -> 78.2 %,
NMAD 0.933 m both): the square root keeps the dark end's levels. A gain
up to 3 or 4 there: 68.3 / 69.8 % at NMAD 0.964 / 0.966 m (the cells it
adds are the noisier ones); 2 kept, NMAD deciding acceptance. Its
statistics are exact integer sums, so a
tile's grey levels equal the whole product's where the window fits in it;
where the gain is 1 the grey levels are those of the global stretch. The same gain applied after rounding (SGBM's
input only) changed nothing (urban 0.272 m): the gain is in the rounding.
A target of 20 levels raised the defects case's NMAD (0.153 m), a gain
up to 4 (target 30) every case's. Rejected after measurement (same
cases): a 1-D least-squares refinement (Lucas-Kanade along the rows, gain
and offset free, 7 to 13 pixel windows) in place of the NCC correction:
0.055-0.18 px on the textures above against 0.044-0.071 px (per pixel it
loses SGM's regularisation; smoothed over 15 x 15 it equals the default);
the NCC correction taken pixel by pixel (``refine_smooth_px`` 1, windows
7 or 11): NMAD up in every real case (Gizeh 0.90 -> 0.96-1.03 m).

Shifts of thirds (``shift_phases`` 3; before: 2, the half-pixel shift):
SGBM runs on the right view shifted 0, 1/3 and 2/3 of a pixel and the
estimates are averaged (harmonics 1 and 2 of the locking cancel, and the
three resamplings average part of the matcher's noise), one more SGBM
pass (four in all with the left-right check). Sub-pixel error (``--subpixel``,
NMAD, Gizeh / Ventoux textures, full contrast, then x0.15 with the local
stretch): 0.050 / 0.044 / 0.054 / 0.045 px -> 0.044 / 0.038 / 0.047 /
0.038 px, the bias by tenth within +/-0.007 px at full contrast. DSM NMAD /
std against the truth or CARS: synthetic 0.170 / 0.41 -> 0.114 / 0.40 m
(its exact DEM leaves disparities near 0), with defects 0.140 / 0.39 ->
0.120 / 0.39, urban 0.120 / 0.72 -> 0.111 / 0.72, Gizeh 0.897 / 1.10 ->
0.885 / 1.09, Ventoux 0.599 / 0.72 -> 0.596 / 0.72 m; coverage and blunder
shares unchanged. Quarters (5 passes): 0.144 / 0.123 / 0.110 / 0.878 /
0.597 m, no better but on Gizeh. Not kept: the correction averaged over
21, 31 or 45 pixels (15 kept) lowered the DSM NMAD of the synthetic
scenes, whose disparities hardly vary (synthetic 0.114 -> 0.105 / 0.099 /
0.096 m, Ventoux against CARS 0.596 -> 0.586 / 0.576 / 0.565 m), but
raised the sub-pixel error where the disparity varies (``--subpixel``:
0.044 -> 0.045 / 0.046 px on Gizeh's texture, 0.038 -> 0.041 / 0.043 px on
Ventoux's): the correction depends on the disparity's fraction. Nor the
NCC correction on the stretched float images instead of the rounded ones:
0.044 -> 0.044 px at full contrast, 0.047 -> 0.045 px (Gizeh) and 0.038
-> 0.037 px (Ventoux) at x0.15, not worth carrying float views through.

Coverage: the support check's rejects are wrong, not good matches lost.
Turning it off recovers cells that are 11 % (defects), 13 % (urban), 11 %
(Gizeh, against CARS) and 1.5 % (Ventoux) beyond 3 m, NMAD 1.37 / 0.69 /
1.51 / 1.07 m against 0.14 / 0.26 / 0.90 / 0.60 m for the kept ones, and
no NCC band or distance to a kept cell separates good rejects (those
next to a kept cell: 4.9 / 4.7 / 8.4 / 1.8 % blunders). What Gizeh lacks
against CARS (13 % of the overlap) is mostly the Great Pyramid's shaded
north face and the overlap's border: matches of NCC < 0.5 there (every
filter off) are 27 % beyond 3 m of CARS (NMAD 2.4 m); Ventoux's fall
(95.3 -> 86.9 %) came from the border fill growing inward only, and CARS
covers 49.7 % of that overlap.

Gizeh's gap is where CARS is wrong (session 7). The Great Pyramid's faces
are planes (51.8 degrees): against a square pyramid fitted to CARS's south,
east and west faces (``python -m benchmarks.stereo``, ``pyramid_faces``),
CARS's north face (97 % covered) is at NMAD 4.73 m and 52 % beyond 3 m of
its plane, against 1.09 / 1.20 / 0.56 m on the other faces; eochain covers 3
% of it. The shaded face's signal supports no height at either scale tried:
a second pass at half resolution (both 8-bit views ``pyrDown``-ed, the same
matcher and filters with its own support check, its disparities doubled and
interpolated bilinearly, filling the pixels the fine pass rejected where all
four coarse neighbours matched) put 66 % of the cells it added on that face
beyond 3 m of the plane (fitted to eochain's own S/E/W faces), and
``min_support`` 0.5 45 %. Elsewhere that pass's cells were as wrong: against
the truth, synthetic / with defects / urban 878 / 4932 / 8245 cells, 38 /
9.5 / 10.1 % beyond 3 m (NMAD 3.08 / 1.16 / 0.83 m, the kept ones 0.1-0.3
%), std 0.40 -> 0.62, 0.39 -> 0.67, 0.72 -> 1.02 m; Gizeh 78.8 -> 89.2 %
covered, those cells 26.5 % beyond 3 m of CARS; with a coarse NCC >= 0.9
only, 3.1 / 3.8 / 4.9 % (Gizeh 22 %); only where the fine pixel has no
texture (local std under 1.5 or 3 levels), 0 to 1478 cells, urban 3.8 to
5.5 % blunders. Not kept: a hole is the right answer there. Nor a weaker
support check once the discontinuity check (below) removes what it let
through at edges: ``min_support`` 0.6 / 0.5 (with 2 px, NCC 0.8 at edges)
raised Gizeh's coverage 78.8 -> 81.9 / 83.5 % and its std against CARS
1.09 -> 1.20 / 1.23 m (urban 0.59 / 0.82 m). Of the 19.5 % of Gizeh's
overlap that CARS covers and eochain does not, the pyramid's north face is
4.6 points, its other faces 2.3, its surroundings 0.9, the overlap's border
1.2 and flat ground elsewhere 10.5 (12 holes of over 1000 cells hold 82 %
of the gap); on that flat ground the half-resolution pass's cells were 20 %
beyond 3 m of CARS (NMAD 2.19 m; 12 % and 1.69 m against CARS median-filtered
over 9 x 9), ``min_support`` 0.5's 6.7 % (1.39 m), the cells kept 0.8 %
(0.83 m). The first ring of cells around a hole (of 20 cells or more) is the
noisiest part of every DSM: NMAD 0.24-0.29 m on the synthetic cases, 1.24 m
(Gizeh) and 0.98 m (Ventoux) against CARS, 1.6-7.9 % beyond 3 m, where cells
six or more from a hole have 0.10-0.11 m, 0.86 m and 0.57 m, 0.0-1.1 %;
on the pyramid's east face, 48 % of the cells within 3 of the north face's
hole are beyond 3 m of the plane. Dropping the ring's cells of NCC below
0.8 (estimated on the rasters) lowered Gizeh's std 1.09 -> 1.07 m and NMAD
0.885 -> 0.880 m for 1.7 points of coverage, the urban std 0.41 -> 0.39 m
for 0.9: not kept.

The discontinuity check (5², 4 px, NCC 0.8), in process on
``benchmarks.stereo``'s cases, std / blunder share / coverage against the
truth (synthetic) or CARS (real), before -> after: urban 0.72 m / 0.29 % /
72.1 % -> 0.41 m / 0.12 % / 70.5 % (cells at roof edges: beside the roof
2.32 -> 0.79 m, on it 4.95 -> 3.88 m, where 14 % are still edges moved by
a cell or two); synthetic 0.40 / 0.10 / 96.3 -> 0.18 / 0.03 / 95.9; with
defects 0.39 / 0.10 / 86.1 -> 0.24 / 0.05 / 85.7; Ventoux 0.72 / 0.42 /
86.9 -> 0.70 / 0.29 / 86.1; Gizeh unchanged (at its B/H of 0.085, 4 px is
24 m of height); NMAD equal or lower. The cells it drops are 7.7 % (urban,
5864 cells, NMAD 0.44 m), 17.9 % (synthetic), 13.3 % (defects) and 8.5 %
(Ventoux, NMAD 1.17 m) beyond 3 m, against 0.0-0.3 % of those kept. Other
settings (step px, NCC; urban std / coverage, Ventoux coverage): 2, 0.7:
0.51 m / 70.4 % / 85.7 %; 1, 0.8: 0.37 / 67.7 / 79.2; 3, 0.8: 0.40 / 70.1
/ 85.7; 4, 0.85: 0.36 / 70.1 / 85.8; 4, 0.9: 0.35 / 69.8 / 85.5; 6, 0.8:
0.41 / 70.7 / 86.6 (Ventoux's std back to 0.72 m); a 7² window (3, 0.8):
0.34 / 69.0 / 83.8; a 3² window (2, 0.7): 0.59 / 71.5 / 86.5. The same
rule on the raster instead (cells whose 5 x 5 heights span over 3 m and
whose mean NCC is below 0.8) lowered the urban std to 0.63 m only and
dropped 6.5 % of Gizeh's cells, whose NCC is lower everywhere: a step in
disparity, not in metres, is what makes windows straddle two surfaces.
Rasterisation's Gaussian at 0.7 or 1.4 cells instead of 1 changed no
NMAD by more than 0.002 m (Ventoux 0.591 / 0.590 m against 0.590 m).

Judged by the truth-free check (session 7, ``benchmarks.stereo_check``'s
functions in process: GDAL orthos of both views through the DSM, the
residual parallax turned into a height error; NMAD / p90 of |implied error|
on the nodes eochain and CARS both cover, Gizeh ~5000 nodes, Ventoux ~415,
with the 95 % interval of the paired change in NMAD from 1000 bootstraps of
the nodes; synthetic cases of ``benchmarks.stereo`` against the truth,
NMAD / std m, coverage), from the defaults (Ventoux 0.377 / 0.58 m, Gizeh
0.332 / 0.74 m; synthetic 0.114 / 0.18, with defects 0.119 / 0.24, urban
0.108 / 0.41 m, 70.5 %), nothing was kept; each lead wins on one side only:

* the half-pixel shifts alone (``"halfshift"``, no NCC correction): Ventoux
  0.306 / 0.53 m (paired -0.09 to -0.05) but Gizeh 0.366 / 0.80 m, its
  median +0.19 m (the locking bias back); synthetic 0.086, defects 0.115,
  urban 0.116 m (worse). With ``p1_factor`` 16 on top: Ventoux 0.225 / 0.46
  m (p1 32, p2 384: 0.193 m at 81.5 % of the nodes covered), urban 0.122 /
  0.47 m, p99 of the clean case 0.45 -> 0.65 m;
* ``p1_factor`` 16 (SGM's smoothness at one-pixel steps doubled): Ventoux
  0.328 / 0.50 m (paired -0.06 to -0.02), synthetic NMAD down (0.104 /
  0.106 / 0.101 m) but urban std 0.41 -> 0.46 m, coverage 70.5 -> 69.4 %,
  Gizeh 0.332 -> 0.338 m (paired -0.001 to +0.014); 12: Ventoux 0.345 m;
* the correction averaged over 61 pixels (15 kept): Ventoux 0.340 / 0.56 m
  (paired -0.06 to -0.01), Gizeh 0.359 / 0.77 m; 31: 0.358 and 0.362 m;
  synthetic (61) 0.093 / 0.116 / 0.109 m, std within 0.005 m;
* NCC windows of 11 pixels for the correction (7 kept): Gizeh 0.310 / 0.72
  m (paired -0.029 to -0.013), Ventoux 0.364 / 0.55 m (paired -0.017 to
  +0.023: no change), synthetic 0.109 / 0.118 / 0.110 m, urban std 0.408 ->
  0.415 m, p99 0.84 -> 0.87 m; 15 pixels: 0.306 / 0.373 m. The only lead
  that does not lose on real data, but it does not win on terrain;
* the correction as a function of the disparity's fraction only (the median
  correction of the tile's matches in 20 bins of the fraction, interpolated
  periodically, in place of the 15² spatial mean): Ventoux 0.305 / 0.50 m
  (paired -0.09 to -0.05) with the median bias removed (+0.04 m), Gizeh
  0.330 -> 0.376 m (paired +0.03 to +0.06) though its p90 fell 0.73 -> 0.70
  m, synthetic 0.114 -> 0.139 m, with defects 0.119 -> 0.126 m, urban 0.108 m
  unchanged: the spatial mean carries more than the locking bias where the
  views are alike. The fraction's curve plus the 15² mean of what it leaves
  of the correction: Ventoux 0.378 m, Gizeh 0.324 m (the default's figures):
  on terrain it is that local residual of the NCC peak, not the locking
  bias's removal, that adds the error;
* 5 x 5 / 9 x 9 / 11 x 11 blocks: Ventoux 0.383 / 0.351 / 0.348 m, coverage
  of the nodes 87.8 / 85.1 / 83.5 % (86.8 % at 7 x 7); P1 and P2 halved
  0.398 m; the 3 x 3 median check off, 0.377 m; one or four shift phases,
  0.308 m without the NCC correction either way.

Terrain (Ventoux, B/H 0.36) prefers less of the NCC correction, flat
ground at low B/H (Gizeh, 0.085) more of it (a likely cause, not measured:
the correction's 7 x 7 windows compare views whose perspectives differ on
relief); a correction weighted by B/H or by the local disparity gradient is
the lead left.

A correction that adapts to the local match (session 7, same check and
cases; paired intervals against the default on the same nodes): each
pixel's correction weighted by ``c**k``, ``c`` the NCC of its 7 x 7
windows at the first estimate (``refine_subpixel``'s middle sample,
clipped to [0, 1]), the weighted 15² mean then multiplied by the local
mean of ``c**k`` (poorly matched neighbourhoods, where the views' windows
differ, keep less of the correction). k = 4: Ventoux 0.376 -> 0.351 m
(paired -0.039 to -0.007), Gizeh 0.330 -> 0.314 m (-0.025 to -0.007);
against the truth, NMAD / std / p99 / coverage, clean 0.114 / 0.182 /
0.446 m / 95.92 % -> 0.109 / 0.181 / 0.444 / 95.92, defects 0.119 / 0.243 /
0.640 / 85.73 -> 0.117 / 0.237 / 0.616 / 85.70, urban 0.108 / 0.408 / 0.843
/ 70.46 -> 0.106 / 0.403 / 0.857 / 70.35. k = 8: Ventoux 0.346 m (-0.049 to
-0.012), Gizeh 0.314 m (-0.026 to -0.004), clean 0.105 / 0.178 / 0.449,
defects 0.116 / 0.237 / 0.621, urban 0.105 / 0.403 / 0.865 m / 70.34 %;
k = 2: Ventoux 0.362 m (-0.028 to +0.001). Of its two parts (k = 8), the
weighting alone wins Gizeh (0.319 m, -0.019 to -0.005) and not Ventoux
(0.382 m), the fade alone Ventoux (0.342 m, -0.051 to -0.014) and not
Gizeh (0.327 m, -0.014 to +0.006); at k = 4 the weighting alone: Ventoux
0.373 m (-0.018 to +0.016), Gizeh 0.320 m (-0.017 to -0.005), synthetic
0.113 / 0.180 / 0.437, 0.119 / 0.240 / 0.614, urban 0.107 / 0.400 / 0.839
m / 70.40 %; the fade alone: urban p99 0.862 m. Kept at k = 4
(``refine_ncc_power``) by the lead: it lowers the implied error on both
real pairs and the NMAD and std of every synthetic case, the figures the
held-out cases are judged by (NMAD, std);
its cost is the urban pair's p99 (0.843 -> 0.857 m) and 0.11 point of its
coverage. Without the fade terrain does not gain. ``c`` taken at the corrected
estimate instead changes nothing (Ventoux 0.352, Gizeh 0.314 m; urban
0.106 / 0.402 / 0.856 m / 70.38 %). Nor did the fade's loss go away when
the mean correction is shrunk by its own noise instead (Wiener factor m² /
(m² + se²), se² the weighted variance of the window's corrections over
their effective count, weights c**4): Ventoux 0.374 m (-0.018 to +0.014),
Gizeh 0.320 m: what the low-NCC corrections carry on Ventoux is a
consistent shift, not noise. Nor a sheared window (the right view warped
by the 7 x 7 mean of the disparities, so both windows follow the local
surface rather than each pixel's estimate): Ventoux 0.374 m (-0.016 to
+0.018), Gizeh 0.323 m (-0.014 to -0.001). A fade by the local disparity
gradient along the rows (``1 / (1 + (g / g0)**2)``, ``g`` the 15² mean of
|dd/dx| px/px) wins Ventoux (g0 0.05 / 0.02: 0.338 / 0.314 m, paired
-0.061 to -0.021 / -0.080 to -0.035) and does not lose Gizeh (0.324 /
0.335 m, intervals across 0) but raises every synthetic p99 (clean 0.446
-> 0.500 / 0.520 m, defects 0.640 -> 0.663 / 0.667, urban 0.843 -> 0.898 /
0.901): on sloping truth the correction is needed, so the slope is not
what spoils it on Ventoux; the match's quality is.

SGM's penalties with that correction (session 8, same check and cases;
Ventoux / Gizeh implied-error NMAD m with the paired interval of the change;
against the truth NMAD / std / p99 m, clean | defects | urban, + urban
coverage %). Default, re-measured: 0.355 / 0.315; 0.109 / 0.181 / 0.444 |
0.117 / 0.237 / 0.616 | 0.106 / 0.403 / 0.857 / 70.35. ``p1_factor`` 12:
0.328 (-0.037, -0.006) / 0.326 (+0.002, +0.018); 0.102 / 0.178 / 0.437 |
0.108 / 0.218 / 0.568 | 0.101 / 0.434 / 0.904 / 69.91. 16: 0.290 (-0.068,
-0.028) / 0.330 (+0.006, +0.024); 0.098 / 0.179 / 0.454 | 0.103 / 0.213 /
0.551 | 0.099 / 0.462 / 0.952 / 69.30; with ``p2_factor`` 192: 0.295 /
0.329, urban 0.420 / 1.003 / 68.10. 32 / 384: 0.248 (-0.134, -0.071) /
0.402 (+0.073, +0.102), clean p99 0.589, urban 0.485 / 1.272 / 64.19.
``p2_factor`` 192 alone: 0.356 / 0.314, urban 0.378 / 0.904 / 68.91.
``refine_ncc_power`` 8: 0.347 (-0.020, +0.004) / 0.315; 0.105 / 0.178 /
0.449 | 0.116 / 0.237 / 0.621 | 0.105 / 0.403 / 0.865 / 70.34; with p1 16:
0.275 / 0.353 (+0.023, +0.048). Two SGBM settings combined per pixel (the
smoother with its own three shift phases: seven SGBM passes instead of
four), its estimate taken where both matched within 1 px and: the default's
discontinuity check (5², 4 px) finds no step (p1 16: 0.308 (-0.060, -0.024)
/ 0.330 (+0.005, +0.023), urban 0.414 / 0.970 / 69.95); blended by the 15²
mean of the default's ``c**4`` (p1 16: 0.341 (-0.028, -0.000) / 0.321
(+0.000, +0.012); 32 / 384: 0.316 / 0.326); where its 7² windows match
better over 15² (0.355 / 0.317); where the 7² mean of the two's difference
is within 0.1 px, smoothing having removed noise rather than a structure
(p1 16: 0.326 (-0.042, -0.012) / 0.327 (+0.003, +0.021), and every
synthetic figure better: 0.098 / 0.173 / 0.436 | 0.103 / 0.227 / 0.574 |
0.099 / 0.406 / 0.859 / 70.31; 0.05 px: 0.355 / 0.328; 32 / 384: 0.353 /
0.342); moved towards it by v / (v + s²), v the 15² variance of the two's
difference (the default's noise), s 0.05 px (p1 16: 0.323 (-0.045, -0.009)
/ 0.323 (+0.000, +0.013), urban p99 0.958; 32 / 384: 0.263 (-0.106,
-0.049) / 0.337 (+0.012, +0.033)) or 0.1 px (32 / 384: 0.296 / 0.326
(+0.003, +0.020), urban p99 1.046). Gizeh loses with every one. Smoothing
moves its disparities less (that rms, median 0.026 px against Ventoux's
0.057) but at B/H 0.085 that is 0.15 m, and with p1 16 its loss is spread
over every quarter of the check's nodes by slope, roughness, image
gradient and NCC (the roughest most, 0.43 -> 0.48 m) while Ventoux gains in
every quarter: no pixel's neighbourhood tells them apart, only the
scene's geometry, and a switch on it is excluded. None passed the helper's
adoption rule (Ventoux's interval below 0, Gizeh's upper bound <= +0.01 m,
the truth's NMAD within 0.005 m, std 10 %, coverage 1 point, p99 10 %).

Kept by the lead: ``p1_factor`` 12 (no extra pass). It lowers the NMAD of
every case with a truth (clean 0.109 -> 0.102, defects 0.117 -> 0.108,
urban 0.106 -> 0.101 m) and Ventoux's implied error (0.355 -> 0.328 m;
CARS 0.26 m), the case nearest the held-out volcanic pair, where eochain
trails CARS; its costs, accepted: Gizeh's implied error 0.315 -> 0.326 m
(CARS 0.65 m), the urban pair's std 0.403 -> 0.434 m, p99 0.857 -> 0.904
m, 0.44 point of its coverage. 16 gains more on terrain, but the synthetic
triplet of ``tests/integration/test_stereo_multiview.py`` shows where
smoothing stops paying: cells beyond 3 m of the truth (its pairs share a
1.6 m bias), best pair / fused, ``p1_factor`` 8: 87 / 58, 12: 47 / 39, 16:
51 / 55, 20: 56 / 56 (fused NMAD 0.072 / 0.066 / 0.063 / 0.061 m): beyond
12 the smoothing makes roof-edge blunders that the pairs share and fusion
cannot remove.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numba
import numpy as np
from numpy.typing import NDArray

from ops.errors import StereoError
from ops.stereo.phase_times import phase

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]
BoolArray = NDArray[np.bool_]


#: SGBM path sets: 3 paths (fast), 5 paths (OpenCV's default), 8 paths (full SGM).
_MODES = {
    "3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "hh": cv2.STEREO_SGBM_MODE_HH,
}


#: Sub-pixel methods: SGBM's own parabola, or an NCC refinement around it.
SUBPIXEL_METHODS = ("sgbm", "ncc", "halfshift", "halfshift+ncc")


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    """Parameters of the matcher (see the module docstring)."""

    block_size: int = 7
    p1_factor: int = 12
    p2_factor: int = 96
    uniqueness_ratio: int = 5
    speckle_window_px: int = 50
    speckle_range_px: int = 2
    lr_max_diff_px: int = 1
    pre_filter_cap: int = 63
    min_texture_std: float = 1.5
    ncc_window_px: int = 5
    min_ncc: float = 0.5
    mode: str = "sgbm"
    subpixel: str = "halfshift+ncc"
    shift_phases: int = 3
    refine_window_px: int = 7
    refine_smooth_px: int = 15
    refine_ncc_power: float = 4.0
    median_max_diff_px: float = 1.0
    min_component_px: int = 0
    cross_check_px: float = 1.0
    support_window_px: int = 9
    min_support: float = 0.7
    edge_window_px: int = 5
    edge_step_px: float = 4.0
    edge_min_ncc: float = 0.8
    contrast_window_px: int = 31
    contrast_target_std: float = 12.0
    contrast_max_gain: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise StereoError(f"matching mode {self.mode!r}, expected one of {sorted(_MODES)}")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise StereoError(f"matching block_size {self.block_size}, expected an odd size >= 1")
        if self.ncc_window_px < 3 or self.ncc_window_px % 2 == 0:
            raise StereoError(
                f"matching ncc_window_px {self.ncc_window_px}, expected an odd size >= 3"
            )
        if self.subpixel not in SUBPIXEL_METHODS:
            raise StereoError(
                f"matching subpixel {self.subpixel!r}, expected one of {list(SUBPIXEL_METHODS)}"
            )
        if self.shift_phases < 2:
            raise StereoError(
                f"matching shift_phases {self.shift_phases}, expected >= 2 (2: the half-pixel "
                "shift)")
        if self.refine_window_px < 3 or self.refine_window_px % 2 == 0:
            raise StereoError(
                f"matching refine_window_px {self.refine_window_px}, expected an odd size >= 3"
            )
        if self.refine_smooth_px < 1 or self.refine_smooth_px % 2 == 0:
            raise StereoError(
                f"matching refine_smooth_px {self.refine_smooth_px}, expected an odd size >= 1 "
                "(1: no smoothing)"
            )
        if not (math.isfinite(self.refine_ncc_power) and self.refine_ncc_power >= 0):
            raise StereoError(
                f"matching refine_ncc_power {self.refine_ncc_power}, expected >= 0 (0: the "
                "corrections' plain mean)"
            )
        if not (math.isfinite(self.cross_check_px) and self.cross_check_px >= 0):
            raise StereoError(
                f"matching cross_check_px {self.cross_check_px}, expected >= 0 (0: no check)"
            )
        if not -1.0 <= self.min_ncc < 1.0:
            raise StereoError(f"matching min_ncc {self.min_ncc}, expected in [-1, 1)")
        if self.support_window_px < 0 or (
                self.support_window_px > 0 and self.support_window_px % 2 == 0):
            raise StereoError(
                f"matching support_window_px {self.support_window_px}, expected an odd size "
                ">= 3 (0: no support check)"
            )
        if not 0.0 <= self.min_support <= 1.0:
            raise StereoError(f"matching min_support {self.min_support}, expected in [0, 1]")
        if self.edge_window_px < 0 or (self.edge_window_px > 0 and self.edge_window_px % 2 == 0):
            raise StereoError(
                f"matching edge_window_px {self.edge_window_px}, expected an odd size >= 3 "
                "(0: no discontinuity check)"
            )
        if not (math.isfinite(self.edge_step_px) and self.edge_step_px > 0):
            raise StereoError(f"matching edge_step_px {self.edge_step_px}, expected > 0 px")
        if not -1.0 <= self.edge_min_ncc < 1.0:
            raise StereoError(f"matching edge_min_ncc {self.edge_min_ncc}, expected in [-1, 1)")
        if self.contrast_window_px < 0 or (
                self.contrast_window_px > 1 and self.contrast_window_px % 2 == 0):
            raise StereoError(
                f"matching contrast_window_px {self.contrast_window_px}, expected an odd size "
                ">= 3 (0: global stretch only)"
            )
        if not (math.isfinite(self.contrast_target_std) and self.contrast_target_std > 0):
            raise StereoError(f"matching contrast_target_std {self.contrast_target_std}, "
                              "expected > 0 grey levels")
        if not (math.isfinite(self.contrast_max_gain) and self.contrast_max_gain >= 1.0):
            raise StereoError(f"matching contrast_max_gain {self.contrast_max_gain}, "
                              "expected >= 1 (1: no local stretch)")


@dataclass(frozen=True, slots=True)
class DisparityMap:
    """Column disparities (NaN where unmatched) and the NCC confidence of each match."""

    disparity_px: Float32Array
    confidence: Float32Array

    @property
    def valid(self) -> BoolArray:
        return np.isfinite(self.disparity_px)


def to_grey_levels(
    image: Float32Array, low: float, high: float, *, contrast_window_px: int = 0,
    contrast_target_std: float = 20.0, contrast_max_gain: float = 1.0,
) -> tuple[NDArray[np.uint8], BoolArray]:
    """Map [low, high] to 0..255 (8-bit, as SGBM needs); NaN pixels give the mask.

    The square root (gamma 1/2) spreads the dark end: shadows keep enough
    grey levels to match, and photon noise becomes about uniform over the range.
    With ``contrast_window_px`` > 1, each pixel's deviation from the mean of
    its valid ``contrast_window_px``² neighbourhood is then multiplied by
    ``contrast_target_std`` / the neighbourhood's standard deviation (in
    grey levels), clipped to [1, ``contrast_max_gain``], before rounding: a
    Wallis filter that only raises contrast, so that low-contrast ground
    (bright sand or concrete, ground under a stretch set by bright roofs) is not
    rounded to a few grey levels (CARS's census runs on the float image).
    """
    valid = np.isfinite(image)
    # numpy's arithmetic on the image's own float type (float32 for SGBM's inputs)
    kind = image.dtype.type if image.dtype in (np.float32, np.float64) else np.float64
    grey = np.empty(image.shape, kind)
    _to_grey(np.ascontiguousarray(image, kind), kind(low), kind(max(high - low, 1e-12)), grey)
    if contrast_window_px > 1 and contrast_max_gain > 1.0:
        return _raise_local_contrast(grey, valid, contrast_window_px, contrast_target_std,
                                     contrast_max_gain), valid
    return np.rint(grey).astype(np.uint8), valid


@numba.njit(cache=True, nogil=True)
def _to_grey(image: Any, low: Any, span: Any, grey: Any) -> None:  # pragma: no cover
    """255 * sqrt of the image clipped to [low, low + span] over span (NaN: 0), per pixel.

    ``low`` and ``span`` have the image's float type: the arithmetic is
    numpy's on that type (the same bits as its ufuncs).
    """
    zero, one, full = image.dtype.type(0.0), image.dtype.type(1.0), image.dtype.type(255.0)
    flat_in, flat_out = image.ravel(), grey.ravel()
    for i in range(flat_in.size):
        v = flat_in[i]
        unit = (v - low) / span if np.isfinite(v) else zero
        flat_out[i] = full * np.sqrt(min(max(unit, zero), one))


#: Fixed-point steps per grey level of the local statistics (exact sums: see below).
_CONTRAST_STEPS = 16.0


def _raise_local_contrast(grey: Any, valid: BoolArray, window_px: int,
                          target_std: float, max_gain: float) -> NDArray[np.uint8]:
    """Deviations from the local mean times target / local std, clipped to [1, max_gain].

    The statistics are sums of integers (grey levels in 1/16) in float64,
    exact whatever the window's position in the array: a pixel whose whole
    window lies inside a tile gets the bits it gets in the whole product.
    Returns the grey levels rounded to 8 bits.
    """
    k = (window_px, window_px)
    v, g, g2 = (np.empty(grey.shape) for _ in range(3))
    _fixed_point(grey, valid, grey.dtype.type(_CONTRAST_STEPS), v, g, g2)
    n = cv2.boxFilter(v, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    s1 = cv2.boxFilter(g, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    s2 = cv2.boxFilter(g2, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    out = np.empty(grey.shape, np.uint8)
    _contrast_gain(grey, valid, g, n, s1, s2, float(target_std), float(max_gain), out)
    return out


@numba.njit(cache=True, nogil=True)
def _fixed_point(grey: Any, valid: Any, steps: Any, v: Any, g: Any, g2: Any
                 ) -> None:  # pragma: no cover - compiled
    """Per pixel: validity (1 or 0), the grey level in 1/``steps`` (0 where invalid), its square."""
    for i in range(grey.shape[0]):
        for j in range(grey.shape[1]):
            v[i, j] = 1.0 if valid[i, j] else 0.0
            g[i, j] = float(np.rint(grey[i, j] * steps)) * v[i, j]
            g2[i, j] = g[i, j] * g[i, j]


@numba.njit(cache=True, nogil=True)
def _contrast_gain(grey: Any, valid: Any, g: Any, n: Any, s1: Any, s2: Any,
                   target_std: float, max_gain: float, out: Any) -> None:  # pragma: no cover
    """Per pixel: the Wallis gain from the window sums, applied where it raises contrast."""
    steps = _CONTRAST_STEPS
    for i in range(grey.shape[0]):
        for j in range(grey.shape[1]):
            count = max(n[i, j], 1.0)
            mean = s1[i, j] / count
            std = np.sqrt(max(s2[i, j] / count - mean * mean, 1e-6)) / steps
            gain = min(max(target_std / std, 1.0), max_gain)
            value = float(grey[i, j])
            if valid[i, j] and gain > 1.0:
                value = min(max((mean + (g[i, j] - mean) * gain) / steps, 0.0), 255.0)
            out[i, j] = np.uint8(np.rint(value))


def local_std(image: NDArray[np.uint8], window_px: int) -> Float32Array:
    """Standard deviation over a ``window_px``² neighbourhood of each pixel."""
    f = image.astype(np.float32)
    k = (window_px, window_px)
    mean = cv2.boxFilter(f, -1, k, borderType=cv2.BORDER_REFLECT)
    mean_sq = cv2.boxFilter(f * f, -1, k, borderType=cv2.BORDER_REFLECT)
    out: Float32Array = np.asarray(np.sqrt(np.maximum(mean_sq - mean * mean, 0.0)), np.float32)
    return out


#: Standard deviation (grey levels) below which a window's NCC is undefined (set to 0).
NCC_MIN_STD = 0.5


def ncc(
    left: Float32Array, right: Float32Array, window_px: int, min_std: float = NCC_MIN_STD
) -> Float32Array:
    """Normalised cross-correlation of co-located ``window_px``² neighbourhoods.

    Where either neighbourhood's standard deviation is below ``min_std`` the
    correlation is undefined (rounding noise would decide it) and set to 0.
    """
    return _ncc_against(_WindowStats.of(left, window_px), right, min_std)


@dataclass(frozen=True, slots=True)
class _WindowStats:
    """An image with the means of its values and squares over ``window_px``² windows."""

    image: Float32Array
    window_px: int
    mean: Float32Array
    mean_sq: Float32Array

    @classmethod
    def of(cls, image: Float32Array, window_px: int) -> _WindowStats:
        image = np.ascontiguousarray(image, np.float32)
        return cls(image, window_px, _box_mean(image, window_px),
                   _box_mean(image * image, window_px))


def _box_mean(a: Float32Array, window_px: int) -> Float32Array:
    return np.asarray(cv2.boxFilter(a, -1, (window_px, window_px),
                                    borderType=cv2.BORDER_REFLECT), np.float32)


def _ncc_against(left: _WindowStats, right: Float32Array, min_std: float) -> Float32Array:
    """:func:`ncc` of an image whose window statistics are known (the same float32 sums)."""
    right = np.ascontiguousarray(right, np.float32)
    cross = np.empty_like(right)
    square = np.empty_like(right)
    _products(left.image, right, cross, square)
    out = np.empty_like(right)
    _ncc_kernel(left.mean, left.mean_sq, _box_mean(right, left.window_px),
                _box_mean(square, left.window_px), _box_mean(cross, left.window_px),
                np.float32(min_std * min_std), out)
    return out


@numba.njit(cache=True, nogil=True)
def _products(left: Any, right: Any, cross: Any, square: Any) -> None:  # pragma: no cover
    """left * right and right * right, per pixel (float32)."""
    for i in range(left.shape[0]):
        for j in range(left.shape[1]):
            cross[i, j] = left[i, j] * right[i, j]
            square[i, j] = right[i, j] * right[i, j]


@numba.njit(cache=True, nogil=True)
def _ncc_kernel(mean_l: Any, mean_ll: Any, mean_r: Any, mean_rr: Any, mean_lr: Any,
                min_var: Any, out: Any) -> None:  # pragma: no cover - compiled
    """Per pixel, in float32 as numpy's ufuncs compute it: covariance over the root of the
    product of the variances, clipped to [-1, 1]; 0 where a variance is below ``min_var``."""
    tiny, one = np.float32(1e-12), np.float32(1.0)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            cov = mean_lr[i, j] - mean_l[i, j] * mean_r[i, j]
            var_l = mean_ll[i, j] - mean_l[i, j] * mean_l[i, j]
            var_r = mean_rr[i, j] - mean_r[i, j] * mean_r[i, j]
            if var_l < min_var or var_r < min_var:
                out[i, j] = 0.0
            else:
                c = cov / np.sqrt(max(var_l * var_r, tiny))
                out[i, j] = min(max(c, -one), one)


#: Keypoints closer than this to an invalid pixel are ignored.
SIFT_BORDER_PX = 10
#: Strongest keypoints kept per image (brute-force matching is quadratic in it).
SIFT_FEATURES = 2000


def _sift_mask(valid: BoolArray | None) -> NDArray[np.uint8] | None:
    if valid is None:
        return None
    return _erode(valid, SIFT_BORDER_PX).astype(np.uint8)


def _erode(mask: BoolArray, radius_px: int) -> BoolArray:
    kernel = np.ones((2 * radius_px + 1, 2 * radius_px + 1), np.uint8)
    return np.asarray(cv2.erode(mask.astype(np.uint8), kernel), dtype=bool)


def tie_points(
    left: NDArray[np.uint8],
    right: NDArray[np.uint8],
    disparity_min_px: float,
    disparity_max_px: float,
    *,
    valid_left: BoolArray | None = None,
    valid_right: BoolArray | None = None,
    ratio: float = 0.75,
) -> tuple[FloatArray, FloatArray]:
    """SIFT matches of a rectified pair: (N, 2) arrays of (col, row) in each image.

    Matches are SIFT (Lowe 2004) with the ratio test, a column offset inside
    the disparity range and a row offset under 8 pixels. Keypoints are
    looked for only inside the valid masks, shrunk by ``SIFT_BORDER_PX``:
    the edges of an image's footprint would otherwise give strong,
    meaningless features.
    """
    none = np.zeros((0, 2))
    sift = cv2.SIFT_create(nfeatures=SIFT_FEATURES)  # type: ignore[attr-defined]
    kp_l, des_l = sift.detectAndCompute(left, _sift_mask(valid_left))
    kp_r, des_r = sift.detectAndCompute(right, _sift_mask(valid_right))
    if des_l is None or des_r is None or len(kp_l) < 2 or len(kp_r) < 2:
        return none, none
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_l, des_r, k=2)
    pts_l: list[tuple[float, float]] = []
    pts_r: list[tuple[float, float]] = []
    for pair in pairs:
        if len(pair) < 2 or pair[0].distance >= ratio * pair[1].distance:
            continue
        pl, pr = kp_l[pair[0].queryIdx].pt, kp_r[pair[0].trainIdx].pt
        if disparity_min_px - 1 <= pl[0] - pr[0] <= disparity_max_px + 1 and abs(pr[1] - pl[1]) < 8:
            pts_l.append(pl)
            pts_r.append(pr)
    if not pts_l:
        return none, none
    return np.asarray(pts_l, np.float64), np.asarray(pts_r, np.float64)


def estimate_row_shift(
    left: NDArray[np.uint8],
    right: NDArray[np.uint8],
    disparity_min_px: float,
    disparity_max_px: float,
    *,
    valid_left: BoolArray | None = None,
    valid_right: BoolArray | None = None,
    ratio: float = 0.75,
    min_matches: int = 20,
) -> tuple[float, int]:
    """Median row offset (right minus left) of SIFT matches of a rectified pair.

    The RPCs of two views carry independent pointing errors of a fraction of
    a pixel to a few pixels; in a rectified pair they appear as a row offset
    that the row-wise matcher cannot absorb (s2p's "pointing correction", de
    Franchis et al. 2014). Matches are :func:`tie_points`. Returns (offset,
    number of matches); the offset is 0 with fewer than ``min_matches`` matches.
    """
    pts_l, pts_r = tie_points(left, right, disparity_min_px, disparity_max_px,
                              valid_left=valid_left, valid_right=valid_right, ratio=ratio)
    if len(pts_l) < min_matches:
        return 0.0, len(pts_l)
    return float(np.median(pts_r[:, 1] - pts_l[:, 1])), len(pts_l)


def match(
    left: NDArray[np.uint8],
    right: NDArray[np.uint8],
    valid_left: BoolArray,
    valid_right: BoolArray,
    disparity_min_px: float,
    disparity_max_px: float,
    config: MatchingConfig,
) -> DisparityMap:
    """Disparities d with left(i, j) ~ right(i, j - d), d in [min, max] (pixels)."""
    if left.shape != right.shape:
        raise StereoError(
            f"rectified images of shapes {left.shape} and {right.shape}, expected equal shapes"
        )
    if not disparity_max_px >= disparity_min_px:
        raise StereoError(
            f"disparity range [{disparity_min_px}, {disparity_max_px}] px is empty; expected "
            "min <= max"
        )
    with phase("match filters"):
        return _match(left, right, valid_left, valid_right, disparity_min_px,
                      disparity_max_px, config)


def _match(
    left: NDArray[np.uint8], right: NDArray[np.uint8], valid_left: BoolArray,
    valid_right: BoolArray, disparity_min_px: float, disparity_max_px: float,
    config: MatchingConfig,
) -> DisparityMap:
    d0 = math.floor(disparity_min_px)
    n_disp = 16 * math.ceil((math.ceil(disparity_max_px) - d0 + 1) / 16)
    bs = config.block_size
    sgbm = cv2.StereoSGBM_create(  # type: ignore[attr-defined]
        minDisparity=d0,
        numDisparities=n_disp,
        blockSize=bs,
        P1=config.p1_factor * bs * bs,
        P2=config.p2_factor * bs * bs,
        disp12MaxDiff=config.lr_max_diff_px,
        preFilterCap=config.pre_filter_cap,
        uniquenessRatio=config.uniqueness_ratio,
        speckleWindowSize=config.speckle_window_px,
        speckleRange=config.speckle_range_px * 16,
        mode=_MODES[config.mode],
    )
    with phase("SGBM"):
        raw = sgbm.compute(left, right)
    disparity = raw.astype(np.float32) / 16.0
    if config.subpixel.startswith("halfshift"):
        disparity = _cancel_pixel_locking(sgbm, left, right, raw, d0, config.shift_phases)
    if config.cross_check_px > 0:
        raw = np.where(_cross_check(sgbm, left, right, disparity, d0, config.cross_check_px),
                       raw, np.int16((d0 - 1) * 16))
    # Whole neighbourhoods must be valid: the edge of an image's footprint
    # (valid next to filler) is texture that belongs to neither view.
    reach = max(bs, config.ncc_window_px) // 2 + 1
    full_l = _erode(valid_left, reach)
    full_r = _erode(valid_right, reach)
    # what could have matched: inside the footprint, with texture
    informative = full_l & (local_std(left, config.ncc_window_px) >= config.min_texture_std)
    ok = (raw > (d0 - 1) * 16) & informative
    disparity[~ok] = np.nan
    left_f, right_f = left.astype(np.float32), right.astype(np.float32)
    if config.subpixel.endswith("ncc"):
        refined, ncc_first = refine_subpixel(left_f, right_f, disparity,
                                             config.refine_window_px)
        disparity = _smoothed_refinement(disparity, refined, ncc_first,
                                         config.refine_smooth_px, config.refine_ncc_power)
    if config.median_max_diff_px > 0:
        with np.errstate(invalid="ignore"):
            ok &= ~(median_deviation(disparity) > config.median_max_diff_px)
        disparity[~ok] = np.nan

    # Warp the right image (and its mask) onto the left through the disparities.
    grid = np.indices(left.shape, dtype=np.float32)
    rows: Float32Array = np.ascontiguousarray(grid[0])
    cols: Float32Array = np.ascontiguousarray(grid[1])
    map_x = (cols - np.where(ok, disparity, 0.0)).astype(np.float32)
    warped = np.asarray(
        cv2.remap(right_f, map_x, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        np.float32,
    )
    warped_valid = np.asarray(cv2.remap(
        full_r.astype(np.float32), map_x, rows, cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    ))
    confidence = ncc(left_f, warped, config.ncc_window_px, config.min_texture_std)
    # whole NCC windows inside the right view (at disparity 0 where unmatched)
    in_right = _erode(warped_valid > 0.999, config.ncc_window_px // 2)
    informative &= in_right
    ok &= in_right & (confidence >= config.min_ncc)
    if config.edge_window_px > 0:
        ok &= ~(_at_discontinuity(np.where(ok, disparity, np.nan).astype(np.float32),
                                 config.edge_window_px, config.edge_step_px)
                & (confidence < config.edge_min_ncc))
    disparity[~ok] = np.nan
    if config.min_component_px > 0:
        remove_small_components(disparity, config.min_component_px, config.speckle_range_px)
        ok &= np.isfinite(disparity)
    if config.support_window_px > 0:
        ok &= _supported(ok, informative, config.support_window_px, config.min_support)
        disparity[~ok] = np.nan
    confidence[~ok] = np.nan
    return DisparityMap(disparity, confidence)


def _at_discontinuity(disparity: Float32Array, window_px: int, step_px: float) -> BoolArray:
    """Where the valid disparities of the ``window_px``² neighbourhood span more than ``step_px``.

    NaN = unmatched, no evidence either way. A pixel there has matching
    windows that straddle two surfaces (a roof's edge and the ground).
    """
    ok = np.isfinite(disparity)
    k = np.ones((window_px, window_px), np.uint8)
    high = cv2.dilate(np.where(ok, disparity, -np.inf).astype(np.float32), k,
                      borderType=cv2.BORDER_CONSTANT, borderValue=-np.inf)
    low = cv2.erode(np.where(ok, disparity, np.inf).astype(np.float32), k,
                    borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    with np.errstate(invalid="ignore"):
        out: BoolArray = ok & (high - low > step_px)
    return out


def _supported(ok: BoolArray, informative: BoolArray, window_px: int,
               min_share: float) -> BoolArray:
    """Where at least ``min_share`` of the informative pixels of the ``window_px``² window matched.

    Informative: inside the footprint and textured (a pixel that could not
    have matched is no evidence against its neighbours).
    """
    k = (window_px, window_px)
    n_ok = cv2.boxFilter(ok.astype(np.float32), -1, k, normalize=False,
                         borderType=cv2.BORDER_CONSTANT)
    n_inf = cv2.boxFilter(informative.astype(np.float32), -1, k, normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    out: BoolArray = n_ok >= min_share * np.maximum(n_inf, 1.0)
    return out


def _cross_check(sgbm: cv2.StereoSGBM, left: NDArray[np.uint8], right: NDArray[np.uint8],
                 disparity: Float32Array, d0: int, max_diff_px: float) -> BoolArray:
    """Where the right-to-left disparities, from a second SGBM pass, agree with ``disparity``.

    The second pass matches the right view against the left one, both
    mirrored (so that the disparity keeps its sign and range): an occluded
    pixel, or a match SGM's smoothness dragged onto the wrong surface, gets
    a different disparity from the other side (the left-right check of
    CARS/Pandora and s2p; OpenCV's ``disp12MaxDiff`` reuses the one cost
    volume and lets most of them through).
    """
    with phase("SGBM"):
        raw_rl = sgbm.compute(np.ascontiguousarray(right[:, ::-1]),
                              np.ascontiguousarray(left[:, ::-1]))[:, ::-1]
    d_rl = np.where(raw_rl > (d0 - 1) * 16, raw_rl.astype(np.float32) / 16.0, np.nan)
    grid = np.indices(left.shape, dtype=np.float32)
    at_right = np.asarray(cv2.remap(
        d_rl, (grid[1] - np.nan_to_num(disparity)).astype(np.float32), grid[0],
        cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan), np.float32)
    # No answer from the other side (its own filters, or the band of columns
    # SGBM cannot match at the image's edge) is no evidence against a match.
    with np.errstate(invalid="ignore"):
        agree: BoolArray = ~(np.abs(at_right - disparity) > max_diff_px)
    return agree


def _warp_columns(image: Float32Array, rows: Float32Array, cols: Float32Array,
                  disparity: Float32Array) -> Float32Array:
    """``image(i, j - d(i, j))`` by bicubic interpolation (edges replicated)."""
    map_x = (cols - disparity).astype(np.float32)
    return np.asarray(cv2.remap(image, map_x, rows, cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REPLICATE), np.float32)


def refine_subpixel(
    left: Float32Array, right: Float32Array, disparity: Float32Array, window_px: int,
    steps_px: tuple[float, ...] = (0.25,),
) -> tuple[Float32Array, Float32Array]:
    """Sub-pixel disparities maximising the NCC of ``window_px``² neighbourhoods, and
    that NCC at the first estimate (the first step's middle sample).

    Starting from ``disparity`` (NaN = unmatched, left alone), each step
    samples the NCC at d - s, d, d + s (the right image warped by bicubic
    interpolation, so fractional shifts are real shifts) and moves d to the
    vertex of the parabola through the three, clipped to +/- s. Fitting
    around the current estimate with a shrinking step keeps the three
    samples symmetric about the peak, which removes most of the bias of a
    single parabola through integer disparities ("pixel locking", Shimizu
    and Okutomi 2005).
    """
    ok = np.isfinite(disparity)
    d = np.where(ok, disparity, 0.0).astype(np.float32)
    grid = np.indices(left.shape, dtype=np.float32)
    rows, cols = np.ascontiguousarray(grid[0]), np.ascontiguousarray(grid[1])
    first: Float32Array | None = None
    stats = _WindowStats.of(left, window_px)
    for step in steps_px:
        c_m, c_0, c_p = (
            _ncc_against(stats, _warp_columns(right, rows, cols, d + np.float32(o)),
                         NCC_MIN_STD)
            for o in (-step, 0.0, step)
        )
        if first is None:
            first = np.asarray(c_0, np.float32)
        curvature = c_m - 2.0 * c_0 + c_p
        peaked = curvature < -1e-6
        with np.errstate(divide="ignore", invalid="ignore"):
            vertex = np.where(peaked, 0.5 * (c_m - c_p) / curvature, 0.0)
        # no peak between the samples: step towards the better side
        vertex = np.where(peaked, vertex, np.sign(c_p - c_m))
        d = d + np.float32(step) * np.clip(vertex, -1.0, 1.0).astype(np.float32)
    if first is None:
        raise StereoError("sub-pixel refinement without a step; expected at least one")
    out: Float32Array = np.where(ok, d, np.nan).astype(np.float32)
    return out, first


def _smoothed_refinement(disparity: Float32Array, refined: Float32Array,
                         ncc_first: Float32Array, window_px: int,
                         ncc_power: float) -> Float32Array:
    """``disparity`` plus the mean of the refinement's corrections over ``window_px``²,
    weighted by how well each pixel's windows matched and faded where they matched poorly.

    The correction removes the first estimate's bias, a smooth function of
    the disparity's fraction; taken pixel by pixel it also carries the NCC
    peak's noise (on the real Gizeh pair the refined disparities of
    neighbours differ twice as much as the half-shift ones, and surfaces
    broke into clusters the raster filters then dropped). Its mean over
    the valid pixels of a neighbourhood keeps the bias removal and averages
    the noise out. Each correction weighs ``c**ncc_power`` (``c`` the NCC of
    its windows at the first estimate, clipped to [0, 1]) and the weighted
    mean is multiplied by the neighbourhood's mean weight: where the views'
    windows differ (relief seen from two angles, poor texture) the
    correction carries a consistent shift rather than the bias, and less of
    it is kept (measured in the module docstring; power 0 is the plain mean).
    """
    if window_px <= 1:
        return refined
    corr = refined - disparity
    ok = np.isfinite(corr)
    weight = np.where(ok, np.clip(np.nan_to_num(ncc_first), 0.0, 1.0) ** ncc_power,
                      0.0).astype(np.float32)
    k = (window_px, window_px)

    def window_sum(values: NDArray[np.floating]) -> Float32Array:
        return np.asarray(cv2.boxFilter(values.astype(np.float32), -1, k, normalize=False,
                                        borderType=cv2.BORDER_CONSTANT), np.float32)

    # the weighted mean (sum w c / sum w) times the mean weight (sum w / n): sum w c / n
    total = window_sum(np.where(ok, corr * weight, 0.0))
    count = window_sum(ok)
    out: Float32Array = np.where(ok, disparity + total / np.maximum(count, 1.0),
                                 np.nan).astype(np.float32)
    return out


def median_deviation(disparity: Float32Array) -> Float32Array:
    """|d - median of the valid 3 x 3 neighbourhood| (NaN where d is NaN).

    The median of an even count is the mean of the two middle values, in
    the disparities' own precision. Per pixel in numba: a median-of-9
    network (Paeth) where the whole neighbourhood is valid, a sort of the
    valid values elsewhere; 2.3 times the speed of sorting stacked shifted
    copies with numpy, with the same bits.
    """
    d = np.ascontiguousarray(disparity)
    if d.dtype not in (np.float32, np.float64):
        d = d.astype(np.float64)
    out = np.empty(d.shape, d.dtype)
    _median_deviation_3x3(d, d.dtype.type(0.5), out)
    return out.astype(np.float32, copy=False)


@numba.njit(cache=True, inline="always")
def _order(a: Any, i: int, j: int) -> None:  # pragma: no cover - compiled
    x, y = a[i], a[j]
    a[i], a[j] = min(x, y), max(x, y)


@numba.njit(cache=True, nogil=True)
def _median_deviation_3x3(values: Any, half: Any, out: Any) -> None:  # pragma: no cover
    h, w = values.shape
    buf = np.empty(9, values.dtype)
    for i in range(h):
        for j in range(w):
            centre = values[i, j]
            if math.isnan(centre):
                out[i, j] = np.nan
                continue
            n = 0
            for ii in range(max(i - 1, 0), min(i + 2, h)):
                for jj in range(max(j - 1, 0), min(j + 2, w)):
                    v = values[ii, jj]
                    if not math.isnan(v):
                        buf[n] = v
                        n += 1
            if n == 9:  # Paeth's median-of-9 network: the median ends in buf[4]
                for a, b in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5),
                             (7, 8), (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7),
                             (4, 2), (6, 4), (4, 2)):
                    _order(buf, a, b)
            else:
                for a in range(1, n):
                    v = buf[a]
                    k = a
                    while k > 0 and buf[k - 1] > v:
                        buf[k] = buf[k - 1]
                        k -= 1
                    buf[k] = v
            out[i, j] = abs(centre - half * (buf[(n - 1) // 2] + buf[n // 2]))


def remove_small_components(disparity: Float32Array, min_px: int, max_step_px: float) -> None:
    """Invalidate (in place) connected blobs of fewer than ``min_px`` pixels.

    Two 4-neighbours belong to one blob when their disparities differ by at
    most ``max_step_px`` (OpenCV's ``filterSpeckles`` on 1/16-pixel values).
    """
    ok = np.isfinite(disparity)
    fixed = np.where(ok, np.clip(np.rint(disparity * 16.0), -32000, 32000), -32768)
    fixed16 = np.ascontiguousarray(fixed.astype(np.int16))
    cv2.filterSpeckles(fixed16, -32768, min_px, round(max_step_px * 16))
    disparity[fixed16 == -32768] = np.nan


def _cancel_pixel_locking(
    sgbm: cv2.StereoSGBM, left: NDArray[np.uint8], right: NDArray[np.uint8],
    raw: NDArray[np.int16], d0: int, phases: int,
) -> Float32Array:
    """Mean of SGBM's disparities on the pair and on the right view shifted k / ``phases`` px.

    The parabola's error is periodic in the true disparity's fraction
    ("pixel locking"): shifting one image by a fraction of a pixel shifts
    that error's phase, so the mean of estimates at equally spaced shifts
    cancels its harmonics below ``phases`` (two: the half-pixel shift of
    Shimizu and Okutomi, "Sub-pixel estimation error cancellation on
    area-based matching", IJCV 2005, which cancels the odd ones), and
    averages part of the matcher's noise (each shift resamples the right
    view). A shifted estimate counts where it matched and agrees with the
    first within a pixel; elsewhere the first is kept.
    """
    grid = np.indices(right.shape, dtype=np.float32)
    rows: Float32Array = np.ascontiguousarray(grid[0])
    d = raw.astype(np.float32) / 16.0
    matched = raw > (d0 - 1) * 16
    total = np.where(matched, d, np.float32(0.0)).astype(np.float32)
    count = matched.astype(np.float32)
    for k in range(1, phases):
        shift = np.float32(k / phases)
        cols: Float32Array = np.ascontiguousarray(grid[1] - shift)
        shifted = np.asarray(cv2.remap(right, cols, rows, cv2.INTER_CUBIC,
                                       borderMode=cv2.BORDER_REPLICATE), np.uint8)
        with phase("SGBM"):
            raw_k = sgbm.compute(left, shifted)
        d_k = raw_k.astype(np.float32) / 16.0 + shift
        agree = matched & (raw_k > (d0 - 1) * 16) & (np.abs(d - d_k) <= 1.0)
        total += np.where(agree, d_k, np.float32(0.0))
        count += agree
    out: Float32Array = np.where(matched, total / np.maximum(count, 1.0), d).astype(np.float32)
    return out
