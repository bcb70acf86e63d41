"""RPC model and RPC text containers, on synthetic models (no GDAL).

The numba projection is checked against an independent numpy evaluation
(``rpc00b_terms``), localisation against projection, and every text reader
against the writer or a hand-written file; bad files are written in tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.errors import RpcDomainError, RpcFormatError
from ops.sensor.rpc import RpcModel, rpc00b_terms
from ops.sensor.rpc_io import (
    parse_geom,
    parse_json,
    parse_rpc_txt,
    parse_xml,
    read_rpc,
    write_geom,
    write_rpb,
)

pytestmark = pytest.mark.unit


def _coeffs(seed: int, lead: tuple[float, ...], small: float) -> tuple[float, ...]:
    rng = np.random.default_rng(seed)
    tail = rng.uniform(-small, small, 20 - len(lead))
    return tuple(float(v) for v in (*lead, *tail))


#: A Pléiades-like model: rows go with -lat, cols with +lon, mild cubic terms.
MODEL = RpcModel(
    line_off=11469.5, samp_off=19999.5, lat_off=43.677, lon_off=7.177, height_off=670.0,
    line_scale=11469.5, samp_scale=19999.5, lat_scale=0.059, lon_scale=0.132,
    height_scale=630.0,
    line_num=_coeffs(1, (-0.0018, 0.0698, -1.0923, -0.0218), 1e-4),
    line_den=_coeffs(2, (1.0, 0.0015, -0.00085, -3.3e-05), 1e-5),
    samp_num=_coeffs(3, (0.0037, 1.0116, -0.0001, 0.0113), 1e-4),
    samp_den=_coeffs(4, (1.0, -0.00036, 0.00016, -0.0005), 1e-5),
    source="synthetic.geom",
)


def _reference_project(model: RpcModel, lon: np.ndarray, lat: np.ndarray,
                       h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    terms = np.array(rpc00b_terms(*model.normalise(lon, lat, h, check=False)))
    ln, ld, sn, sd = (np.tensordot(np.array(getattr(model, k)), terms, axes=1)
                      for k in ("line_num", "line_den", "samp_num", "samp_den"))
    row = ln / ld * model.line_scale + model.line_off - model.row_origin
    col = sn / sd * model.samp_scale + model.samp_off - model.col_origin
    return row, col


def _random_ground(model: RpcModel, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (
        model.lon_off + model.lon_scale * rng.uniform(-1, 1, n),
        model.lat_off + model.lat_scale * rng.uniform(-1, 1, n),
        model.height_off + model.height_scale * rng.uniform(-1, 1, n),
    )


def _fields(model: RpcModel) -> dict[str, object]:
    out = dataclasses.asdict(model)
    out.pop("source")
    return out


# ------------------------------------------------------------ projection
def test_centre_of_the_box_projects_to_the_constant_terms() -> None:
    row, col = MODEL.project(MODEL.lon_off, MODEL.lat_off, MODEL.height_off)
    assert row == pytest.approx(MODEL.line_off + MODEL.line_scale * -0.0018, abs=1e-9)
    assert col == pytest.approx(MODEL.samp_off + MODEL.samp_scale * 0.0037, abs=1e-9)


def test_projection_matches_independent_numpy_evaluation() -> None:
    lon, lat, h = _random_ground(MODEL, 10_000)
    row, col = MODEL.project(lon, lat, h)
    ref_row, ref_col = _reference_project(MODEL, lon, lat, h)
    np.testing.assert_allclose(row, ref_row, rtol=0, atol=1e-8)
    np.testing.assert_allclose(col, ref_col, rtol=0, atol=1e-8)


def test_projection_broadcasts_and_keeps_the_shape() -> None:
    lon = np.linspace(7.1, 7.2, 12).reshape(3, 4)
    row, col = MODEL.project(lon, 43.68, 500.0)
    assert row.shape == (3, 4) and col.shape == (3, 4)
    ref_row, _ = _reference_project(MODEL, lon, np.full_like(lon, 43.68), np.full_like(lon, 500.0))
    np.testing.assert_allclose(row, ref_row, atol=1e-8)
    # east is +col for this model
    assert np.all(np.diff(col, axis=1) > 0)


def test_crop_origin_shifts_pixels_and_folding_keeps_them() -> None:
    crop = MODEL.with_origin(5000.0, 20500.0)
    lon, lat, h = _random_ground(MODEL, 100)
    row, col = MODEL.project(lon, lat, h)
    crow, ccol = crop.project(lon, lat, h)
    np.testing.assert_allclose(crow, row - 5000.0, atol=1e-9)
    np.testing.assert_allclose(ccol, col - 20500.0, atol=1e-9)
    frow, fcol = crop.folded().project(lon, lat, h)
    np.testing.assert_allclose(frow, crow, atol=1e-9)
    np.testing.assert_allclose(fcol, ccol, atol=1e-9)
    assert crop.folded().row_origin == 0.0


def test_nodata_and_empty_inputs() -> None:
    row, col = MODEL.project([7.18, np.nan], [43.68, 43.68], [np.nan, 500.0])
    assert np.isnan(row).all() and np.isnan(col).all()
    lon, lat = MODEL.localize([np.nan, 100.0], [5.0, 200.0], [500.0, np.nan])
    assert np.isnan(lon).all() and np.isnan(lat).all()
    row, _ = MODEL.project(np.full(3, np.nan), 43.68, 500.0)
    assert np.isnan(row).all()
    empty_row, empty_col = MODEL.project([], [], [])
    assert empty_row.shape == (0,) and empty_col.shape == (0,)
    assert MODEL.localize(np.empty((0, 2)), np.empty((0, 2)), 0.0)[0].shape == (0, 2)


# ----------------------------------------------------------- localisation
@settings(max_examples=60, deadline=None)
@given(
    r=st.floats(-1.0, 1.0), c=st.floats(-1.0, 1.0), hn=st.floats(-1.0, 1.0),
    row_origin=st.sampled_from([0.0, 5000.0]),
)
def test_localize_inverts_project(r: float, c: float, hn: float, row_origin: float) -> None:
    model = MODEL.with_origin(row_origin, 0.0)
    row = model.line_off + r * model.line_scale - row_origin
    col = model.samp_off + c * model.samp_scale
    h = model.height_off + hn * model.height_scale
    lon, lat = model.localize(row, col, h)
    back_row, back_col = model.project(lon, lat, h)
    assert abs(float(back_row) - row) <= 1e-6
    assert abs(float(back_col) - col) <= 1e-6


def test_localize_recovers_ground_points_in_bulk() -> None:
    lon, lat, h = _random_ground(MODEL, 200_000, seed=3)
    row, col = MODEL.project(lon, lat, h)
    lon2, lat2 = MODEL.localize(row, col, h)
    assert np.max(np.abs(lon2 - lon)) < 1e-10
    assert np.max(np.abs(lat2 - lat)) < 1e-10
    # a higher point at the same pixel lies elsewhere on the ground
    lon3, _ = MODEL.localize(row[:10], col[:10], h[:10] + 100.0)
    assert np.all(np.abs(lon3 - lon[:10]) > 1e-6)


def test_ground_bounds_contain_every_pixel_at_every_height() -> None:
    crop = MODEL.with_origin(5000.0, 20500.0)
    west, south, east, north = crop.ground_bounds(801, 800)
    assert west < east and south < north
    rng = np.random.default_rng(5)
    rows, cols = rng.uniform(-0.5, 800.5, 2000), rng.uniform(-0.5, 799.5, 2000)
    hs = rng.uniform(*MODEL.height_range, 2000)
    lon, lat = crop.localize(rows, cols, hs)
    assert np.all((lon >= west) & (lon <= east) & (lat >= south) & (lat <= north))
    # a pixel outside the crop localises outside the bounds
    lon_out, _ = crop.localize(400.0, 2000.0, MODEL.height_off)
    assert not west <= float(lon_out) <= east
    with pytest.raises(RpcDomainError, match="0 x 800"):
        crop.ground_bounds(0, 800)


# ------------------------------------------------------------------ errors
def test_point_far_outside_the_box_names_file_key_and_value() -> None:
    with pytest.raises(RpcDomainError, match=r"synthetic\.geom: lat = 45\.0") as info:
        MODEL.project(7.177, 45.0, 670.0)
    assert "validity box" in str(info.value)
    with pytest.raises(RpcDomainError, match="h = 9000"):
        MODEL.localize(100.0, 100.0, 9000.0)
    with pytest.raises(RpcDomainError, match="row = -60000.0"):
        MODEL.with_origin(5000.0, 0.0).localize(-60000.0, 100.0, 670.0)
    row, _ = MODEL.project(7.177, 45.0, 670.0, check=False)
    assert np.isfinite(row)


def test_vanishing_denominator_raises_with_the_point() -> None:
    den = (0.0, 1.0) + (0.0,) * 18  # line_den = L: zero on the central meridian
    model = dataclasses.replace(MODEL, line_den=den, source="bad.rpb")
    with pytest.raises(RpcDomainError, match=r"bad\.rpb: .*line_den.*lon=7\.177"):
        model.project([7.2, 7.177], 43.68, 600.0)
    row, _ = model.project([7.2, 7.177], 43.68, 600.0, check=False)
    assert np.isfinite(row[0]) and np.isinf(row[1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"line_den": (0.0,) * 20}, "line_den has all 20 coefficients equal to 0"),
        ({"samp_num": (1.0,) * 19}, "samp_num has 19 coefficients, expected 20"),
        ({"lat_scale": 0.0}, "lat_scale = 0.0"),
        ({"line_num": (float("nan"),) * 20}, "line_num holds a non-finite"),
    ],
)
def test_invalid_model_values_are_format_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(RpcFormatError, match=message):
        dataclasses.replace(MODEL, **change)  # type: ignore[arg-type]


# ----------------------------------------------------------------- readers
def test_geom_round_trip_is_exact(tmp_path: Path) -> None:
    model = MODEL.with_origin(5000.0, 20500.0)
    path = write_geom(model, tmp_path / "img.geom")
    back = read_rpc(path)
    assert _fields(back) == _fields(model.with_origin(0.0, 0.0))
    assert back.source == str(path)


def test_rpb_round_trip_is_exact(tmp_path: Path) -> None:
    path = write_rpb(MODEL, tmp_path / "img.RPB")
    assert _fields(read_rpc(path)) == _fields(MODEL)


def test_rpc00a_geom_is_reordered_to_rpc00b() -> None:
    b_text = write_geom_text(MODEL)
    text = b_text
    # RPC00A: 1 L P H LP LH PH LPH L2 P2 H2 ...; RPC00B has L2 P2 H2 at 7-9, LPH at 10
    a_order = (0, 1, 2, 3, 4, 5, 6, 10, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19)
    for name in ("line_num", "line_den", "samp_num", "samp_den"):
        coeffs = getattr(MODEL, name)
        for i in range(20):
            text = text.replace(f"{name}_coeff_{i:02d}:  {coeffs[i]!r}\n",
                                f"{name}_coeff_{i:02d}:  {coeffs[a_order[i]]!r}\n")
    assert text != b_text
    text = text.replace("polynomial_format:  B", "polynomial_format:  A")
    assert _fields(parse_geom(text, "a.geom")) == _fields(MODEL)


def write_geom_text(model: RpcModel) -> str:
    lines = ["polynomial_format:  B"]
    for key, field in (("line_off", "line_off"), ("samp_off", "samp_off"),
                       ("lat_off", "lat_off"), ("long_off", "lon_off"),
                       ("height_off", "height_off"), ("line_scale", "line_scale"),
                       ("samp_scale", "samp_scale"), ("lat_scale", "lat_scale"),
                       ("long_scale", "lon_scale"), ("height_scale", "height_scale")):
        lines.append(f"{key}:  {getattr(model, field)!r}")
    for name in ("line_num", "line_den", "samp_num", "samp_den"):
        lines += [f"{name}_coeff_{i:02d}:  {c!r}" for i, c in enumerate(getattr(model, name))]
    return "\n".join(lines) + "\n"


def _scalar_pairs(model: RpcModel) -> list[tuple[str, float]]:
    return [("LINE_OFF", model.line_off), ("SAMP_OFF", model.samp_off),
            ("LAT_OFF", model.lat_off), ("LONG_OFF", model.lon_off),
            ("HEIGHT_OFF", model.height_off), ("LINE_SCALE", model.line_scale),
            ("SAMP_SCALE", model.samp_scale), ("LAT_SCALE", model.lat_scale),
            ("LONG_SCALE", model.lon_scale), ("HEIGHT_SCALE", model.height_scale)]


def _coeff_pairs(model: RpcModel) -> list[tuple[str, tuple[float, ...]]]:
    return [("LINE_NUM_COEFF", model.line_num), ("LINE_DEN_COEFF", model.line_den),
            ("SAMP_NUM_COEFF", model.samp_num), ("SAMP_DEN_COEFF", model.samp_den)]


def test_rpc_txt_reads_numbered_coefficients() -> None:
    lines = [f"{k}: {v!r}" for k, v in _scalar_pairs(MODEL)]
    for key, coeffs in _coeff_pairs(MODEL):
        lines += [f"{key}_{i + 1}: {c!r}" for i, c in enumerate(coeffs)]
    assert _fields(parse_rpc_txt("\n".join(lines), "x_RPC.TXT")) == _fields(MODEL)


def test_dimap_offsets_are_one_based() -> None:
    inverse = "".join(f"<{k}_{i + 1}>{c!r}</{k}_{i + 1}>"
                      for k, cs in _coeff_pairs(MODEL) for i, c in enumerate(cs))
    validity = "".join(
        f"<{k}>{v + 1.0 if k in ('LINE_OFF', 'SAMP_OFF') else v!r}</{k}>"
        for k, v in _scalar_pairs(MODEL)
    )
    xml = (f"<Dimap_Document><Rational_Function_Model><Global_RFM>"
           f"<Direct_Model><LINE_NUM_COEFF_1>9</LINE_NUM_COEFF_1></Direct_Model>"
           f"<Inverse_Model>{inverse}</Inverse_Model><RFM_Validity>{validity}</RFM_Validity>"
           f"</Global_RFM></Rational_Function_Model></Dimap_Document>")
    model = parse_xml(xml, "RPC_X.XML")
    assert model.line_off == MODEL.line_off and model.samp_off == MODEL.samp_off
    assert _fields(model) == _fields(MODEL)


def test_digitalglobe_xml_reads_rpb_block() -> None:
    tags = {"LINE_OFF": "LINEOFFSET", "SAMP_OFF": "SAMPOFFSET", "LAT_OFF": "LATOFFSET",
            "LONG_OFF": "LONGOFFSET", "HEIGHT_OFF": "HEIGHTOFFSET",
            "LINE_SCALE": "LINESCALE", "SAMP_SCALE": "SAMPSCALE", "LAT_SCALE": "LATSCALE",
            "LONG_SCALE": "LONGSCALE", "HEIGHT_SCALE": "HEIGHTSCALE"}
    lists = {"LINE_NUM_COEFF": "LINENUMCOEF", "LINE_DEN_COEFF": "LINEDENCOEF",
             "SAMP_NUM_COEFF": "SAMPNUMCOEF", "SAMP_DEN_COEFF": "SAMPDENCOEF"}
    body = "".join(f"<{tags[k]}>{v!r}</{tags[k]}>" for k, v in _scalar_pairs(MODEL))
    body += "".join(f"<{lists[k]}List><{lists[k]}>{' '.join(map(repr, cs))}</{lists[k]}>"
                    f"</{lists[k]}List>" for k, cs in _coeff_pairs(MODEL))
    xml = f"<isd><IMD/><RPB><SATID>WV02</SATID><IMAGE>{body}</IMAGE></RPB></isd>"
    assert _fields(parse_xml(xml, "wv.xml")) == _fields(MODEL)


def test_iarpa_json_keys() -> None:
    names = {"LINE_OFF": "row_offset", "SAMP_OFF": "col_offset", "LAT_OFF": "lat_offset",
             "LONG_OFF": "lon_offset", "HEIGHT_OFF": "alt_offset", "LINE_SCALE": "row_scale",
             "SAMP_SCALE": "col_scale", "LAT_SCALE": "lat_scale", "LONG_SCALE": "lon_scale",
             "HEIGHT_SCALE": "alt_scale", "LINE_NUM_COEFF": "row_num",
             "LINE_DEN_COEFF": "row_den", "SAMP_NUM_COEFF": "col_num",
             "SAMP_DEN_COEFF": "col_den"}
    rpc: dict[str, object] = {names[k]: v for k, v in _scalar_pairs(MODEL)}
    rpc |= {names[k]: list(cs) for k, cs in _coeff_pairs(MODEL)}
    text = json.dumps({"img": "x.tif", "height": 10, "width": 10, "rpc": rpc})
    assert _fields(parse_json(text, "x.json")) == _fields(MODEL)


def test_container_is_detected_from_content(tmp_path: Path) -> None:
    rpb = write_rpb(MODEL, tmp_path / "a.RPB").read_text()
    (tmp_path / "noext").write_text(rpb)
    assert _fields(read_rpc(tmp_path / "noext")) == _fields(MODEL)
    (tmp_path / "model.txt").write_text(write_geom_text(MODEL))
    assert _fields(read_rpc(tmp_path / "model.txt")) == _fields(MODEL)


# ------------------------------------------------------------- bad files
def test_file_with_no_rpc(tmp_path: Path) -> None:
    path = tmp_path / "empty.geom"
    path.write_text("type:  ossimRpcModel\nimage_id:  x\n")
    with pytest.raises(RpcFormatError, match=r"empty\.geom: holds no RPC model"):
        read_rpc(path)
    with pytest.raises(RpcFormatError, match="no such file"):
        read_rpc(tmp_path / "missing.geom")
    other = tmp_path / "other.xml"
    other.write_text("<root><a>1</a></root>")
    with pytest.raises(RpcFormatError, match=r"other\.xml: XML root <root> holds no RPC"):
        read_rpc(other)


def test_malformed_value_names_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.geom"
    path.write_text(write_geom_text(MODEL).replace(f"lat_off:  {MODEL.lat_off!r}",
                                                   "lat_off:  forty-three"))
    with pytest.raises(RpcFormatError, match=r"bad\.geom: key lat_off = 'forty-three'"):
        read_rpc(path)


def test_truncated_files(tmp_path: Path) -> None:
    text = write_geom_text(MODEL)
    cut = tmp_path / "cut.geom"
    cut.write_text(text[: text.index("samp_den_coeff_19")])
    with pytest.raises(RpcFormatError, match=r"samp_den_coeff_00\.\.19 has 19 coefficients"):
        read_rpc(cut)
    short = tmp_path / "short.geom"
    short.write_text(text[: text.index("samp_num_coeff_00")])
    with pytest.raises(RpcFormatError, match=r"samp_num_coeff_00\.\.19, samp_den.* missing"):
        read_rpc(short)
    rpb = write_rpb(MODEL, tmp_path / "full.RPB").read_text()
    xml = tmp_path / "RPC_cut.XML"
    xml.write_text("<Dimap_Document><Rational_Function_Model><Inverse_Model>")
    with pytest.raises(RpcFormatError, match=r"RPC_cut\.XML: not well-formed XML"):
        read_rpc(xml)
    trunc_rpb = tmp_path / "t.RPB"
    trunc_rpb.write_text(rpb[: rpb.index("sampDenCoef")])
    with pytest.raises(RpcFormatError, match="sampDenCoef missing"):
        read_rpc(trunc_rpb)
    js = tmp_path / "t.json"
    js.write_text('{"rpc": {"row_offset": 1')
    with pytest.raises(RpcFormatError, match=r"t\.json: not valid JSON"):
        read_rpc(js)


def test_rasterio_rpc_round_trip_folds_the_origin() -> None:
    crop = MODEL.with_origin(5000.0, 20500.0)
    rpc = crop.to_rasterio()
    assert rpc.line_off == MODEL.line_off - 5000.0
    assert rpc.samp_off == MODEL.samp_off - 20500.0
    back = RpcModel.from_rasterio(rpc, source="tags")
    lon, lat, h = _random_ground(MODEL, 50)
    np.testing.assert_allclose(back.project(lon, lat, h), crop.project(lon, lat, h), atol=1e-9)


_finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
_scale = st.floats(1e-6, 1e5, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(_finite, min_size=5, max_size=5),
    scales=st.lists(_scale, min_size=5, max_size=5),
    coeffs=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=80, max_size=80),
)
def test_writers_round_trip_any_model_exactly(
    tmp_path_factory: pytest.TempPathFactory, offsets: list[float], scales: list[float],
    coeffs: list[float],
) -> None:
    dens = [[1.0, *coeffs[20 * k + 1: 20 * k + 20]] for k in range(4)]
    model = RpcModel(
        line_off=offsets[0], samp_off=offsets[1], lat_off=offsets[2], lon_off=offsets[3],
        height_off=offsets[4], line_scale=scales[0], samp_scale=scales[1],
        lat_scale=scales[2], lon_scale=scales[3], height_scale=scales[4],
        line_num=tuple(coeffs[0:20]), line_den=tuple(dens[1]),
        samp_num=tuple(coeffs[40:60]), samp_den=tuple(dens[3]),
    )
    folder = tmp_path_factory.mktemp("rt")
    assert _fields(read_rpc(write_geom(model, folder / "m.geom"))) == _fields(model)
    assert _fields(read_rpc(write_rpb(model, folder / "m.RPB"))) == _fields(model)


def test_disagreement_of_two_models_is_their_largest_pixel_gap() -> None:
    from dataclasses import replace

    from ops.sensor.rpc_check import rpc_disagreement_px

    assert rpc_disagreement_px(MODEL, MODEL) == 0.0
    assert rpc_disagreement_px(MODEL, replace(MODEL, line_off=MODEL.line_off + 0.5)) == (
        pytest.approx(0.5, abs=1e-9))
    shifted = replace(MODEL, samp_off=MODEL.samp_off - 3.0, line_off=MODEL.line_off + 4.0)
    assert rpc_disagreement_px(MODEL, shifted) == pytest.approx(5.0, abs=1e-9)
    # the same model attached to another crop origin is 5 px off too
    assert rpc_disagreement_px(MODEL, MODEL.with_origin(-4.0, 3.0)) == pytest.approx(5.0, abs=1e-9)
