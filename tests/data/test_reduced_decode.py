"""Reduced-resolution JPEG decode in preparation (data_prep/crops.py, data_prep/shards.py; jpeg_decode.md): the
pixel mapping of libjpeg's scaled output, the factor a frame gets, the fallbacks, a real frame's PSNR floor,
and shards byte-identical to the full decode with ``data.reduced_decode`` off."""

from __future__ import annotations

import math
import struct

import cv2
import numpy as np
import pytest
from conftest import SHARED

from data_prep.crops import (
    REDUCE_MARGIN,
    crop_geometry,
    crop_region,
    decode_factor,
    decode_image,
    decode_scaled,
    encode_jpeg,
    jpeg_header,
    source_per_crop_pixel,
)
from data_prep.pairs import plan_pairs
from data_prep.shards import CropSettings, ShardTask, crop_shard, pack_shards, parquet_bytes
from data_prep.tracks import FrameRef, Track
from ocean.config import apply_overrides, paper, smoke

REAL_FRAME = SHARED / "data" / "real_sequences" / "dtb70" / "Surfing06" / "img" / "00001.jpg"


def _jpeg(img: np.ndarray, quality: int = 95, sampling_444: bool = False) -> bytes:
    params = [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    if sampling_444:
        params += [int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR), int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def _psnr(a, b) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _smooth_frame(w: int = 1280, h: int = 720) -> np.ndarray:
    """Low-frequency colour content (periods >= 80 px): no aliasing at the downsamplings used here."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [128 + 90 * np.sin(x / 41.0 + k) * np.cos(y / 29.0 - k) + 20 * np.sin((x + y) / 97.0) for k in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------------------
# The mapping (jpeg_decode.md §1, §2)


@pytest.mark.parametrize("f", [2, 4, 8])
def test_reduced_pixel_i_is_centred_on_full_pixel_f_i_plus_half_f_minus_one(f):
    # value 10 + x + y at full pixel (x, y): the mean of a block [f i, f i + f) x [f j, f j + f) is the value
    # at its centre, 10 + f (i + j) + f - 1, an integer, so only that centre matches to rounding; odd sides
    # test ceil()
    w, h = 117, 61
    y, x = np.mgrid[0:h, 0:w]
    img = np.repeat((10 + x + y).astype(np.uint8)[..., None], 3, -1)
    data = _jpeg(img, 100, sampling_444=True)
    small, problem, used, size = decode_scaled(data, f)
    assert problem is None and used == f and size == (w, h)
    assert small.shape == (math.ceil(h / f), math.ceil(w / f), 3)  # libjpeg: ceil(side / f)
    ii, jj = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    inside = (f * jj + f <= w) & (f * ii + f <= h)  # blocks wholly inside the image
    errors = {}
    for name, shift in (("centre", (f - 1) / 2), ("corner", 0.0), ("half-step", f / 2)):
        want = 10 + (f * jj + shift) + (f * ii + shift)
        errors[name] = np.abs(small[..., 1].astype(float) - want)[inside].mean()
    assert errors["centre"] <= 0.25  # JPEG q100 rounding (measured: 0.0)
    # the other conventions are off by (f - 1) / 2 and 1/2 px in x and y: f - 1 and 1 grey level
    assert errors["corner"] >= f - 1 - 0.3 and errors["half-step"] >= 1 - 0.3


@pytest.mark.parametrize("f", [2, 4, 8])
def test_a_crop_from_the_reduced_image_matches_the_full_decode_crop_on_smooth_content(f):
    full_img = _smooth_frame()
    data = _jpeg(full_img, 95)
    full, _ = decode_image(data)
    small, _, used, size = decode_scaled(data, f)
    assert used == f and size == (1280, 720)
    box = (380.0, 170.0, 900.0, 560.0)  # needs >= 2 f source px per crop px for f = 2, 4; 8 is forced here
    for side in (145, 433):
        ref = crop_region(full, box, side)
        got = crop_region(small, box, side, decode_factor=f)
        assert got.geometry == ref.geometry and np.array_equal(got.box_xyxy, ref.box_xyxy)  # full-res geometry
        naive = crop_geometry(box, side).matrix()
        naive[:, :2] *= f  # reduced pixel i taken at full pixel f i: off by (f - 1) / 2 source px
        wrong = cv2.warpAffine(small, naive, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=cv2.mean(small)[:3])
        assert _psnr(got.image, ref.image) >= 40.0
        assert _psnr(got.image, ref.image) >= _psnr(wrong, ref.image) + 3.0


def test_the_reduced_matrix_maps_reduced_pixel_centres_where_the_full_matrix_maps_their_full_centres():
    g = crop_geometry((100.5, 50.25, 700.0, 400.0), 433)
    for f in (2, 4, 8):
        i = np.array([0.0, 3.0, 17.0])
        m_red, m_full = g.matrix(f), g.matrix()
        assert np.allclose(m_red[0, 0] * i + m_red[0, 2], m_full[0, 0] * (f * i + (f - 1) / 2) + m_full[0, 2])
        assert np.allclose(m_red[1, 1] * i + m_red[1, 2], m_full[1, 1] * (f * i + (f - 1) / 2) + m_full[1, 2])
    assert np.array_equal(g.matrix(1), g.matrix())


# --------------------------------------------------------------------------------------------------------
# Which factor a frame gets (jpeg_decode.md §3)


def _square(side: float, x: float = 10.0) -> tuple[float, float, float, float]:
    return (x, x, x + side, x + side)


def test_the_factor_is_the_largest_power_of_two_every_crop_downsamples_by_the_margin_times():
    # a square box of side w: p = w, s_z = 2 w, s_x = 2 w 511 / 127, source px per crop px = s_x / 510
    def side_for(ratio):
        return ratio * 510 * 127 / (2 * 511)

    assert source_per_crop_pixel(_square(side_for(3.0))) == pytest.approx(3.0)
    eps = 1e-6
    assert REDUCE_MARGIN == 2.0
    for f in (2, 4, 8):
        assert decode_factor([_square(side_for(2 * f) * (1 + eps))]) == f
        assert decode_factor([_square(side_for(2 * f) * (1 - eps))]) == f // 2 if f > 2 else 1
    assert decode_factor([_square(side_for(100.0))]) == 8  # 8 is libjpeg's largest scale
    assert decode_factor([_square(side_for(20.0)), _square(side_for(5.0))]) == 2  # the smallest crop decides
    assert decode_factor([_square(side_for(20.0))], margin=1.0) == 8
    assert decode_factor([]) == 1
    assert decode_factor([_square(side_for(20.0)), (5.0, 5.0, 5.0, 9.0)]) == 1  # zero width: no crop
    assert decode_factor([(0.0, 0.0, float("nan"), 9.0)]) == 1


# --------------------------------------------------------------------------------------------------------
# What is decoded reduced, and what falls back to the full decode


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    tiff = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_headers_and_fallbacks():
    img = _smooth_frame(203, 101)
    base = _jpeg(img)
    assert jpeg_header(base) == (203, 101, 1)
    ok, prog = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_PROGRESSIVE), 1])
    assert jpeg_header(prog.tobytes()) == (203, 101, 1)
    assert decode_scaled(prog.tobytes(), 4)[2:] == (4, (203, 101))
    rotated = _with_exif_orientation(base, 6)
    assert jpeg_header(rotated) == (203, 101, 6)
    assert jpeg_header(_with_exif_orientation(base, 1)) == (203, 101, 1)
    # OpenCV turns an EXIF-rotated frame upright; the reduced path leaves those to the full decode
    full, _ = decode_image(rotated)
    image, problem, used, size = decode_scaled(rotated, 2)
    assert used == 1 and np.array_equal(image, full) and size == (full.shape[1], full.shape[0])
    ok, png = cv2.imencode(".png", img)
    assert jpeg_header(png.tobytes()) is None
    image, problem, used, size = decode_scaled(png.tobytes(), 2)
    assert used == 1 and np.array_equal(image, img) and size == (203, 101)
    # broken files keep decode_image's reasons
    assert decode_scaled(base[: len(base) // 2], 2)[:3] == (None, "truncated_jpeg", 1)
    assert decode_scaled(b"", 4)[:3] == (None, "empty", 1)
    with pytest.raises(ValueError):
        decode_scaled(base, 3)


@pytest.mark.skipif(not REAL_FRAME.exists(), reason="../shared real sequences absent")
def test_a_real_frame_keeps_its_crops_above_the_psnr_floor():
    data = REAL_FRAME.read_bytes()
    full, _ = decode_image(data)
    assert full.shape == (720, 1280, 3)
    # an object a third of the frame wide (factor 2) and one of three quarters (factor 4)
    for box, want in (((420.0, 200.0, 860.0, 520.0), 2), ((140.0, 40.0, 1140.0, 700.0), 4)):
        f = decode_factor([box])
        assert f == want
        small, _, used, _ = decode_scaled(data, f)
        assert used == f
        for side in (145, 433):
            ref = crop_region(full, box, side)
            got = crop_region(small, box, side, decode_factor=f)
            stored = [cv2.imdecode(np.frombuffer(encode_jpeg(c.image, 95), np.uint8), cv2.IMREAD_COLOR)
                      for c in (ref, got)]
            # benchmarks/reduced_decode.py measured median 41.5 / min 30.9 dB over 287 crops (BENCHMARKS.md)
            assert _psnr(*stored) >= 33.0


# --------------------------------------------------------------------------------------------------------
# Shards


def _task(tmp_path, boxes) -> ShardTask:
    noise = np.random.default_rng(0).integers(0, 12, (720, 1280, 3))  # some texture finer than a pixel
    frame = np.clip(_smooth_frame().astype(int) + noise - 6, 0, 255).astype(np.uint8)
    refs = []
    for i in range(len(boxes)):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(_jpeg(np.roll(frame, 37 * i, axis=1), 90))
        refs.append(FrameRef(str(i), path=str(p)))
    track = Track("got10k", "v0", "0", refs, np.array(boxes, float), np.ones(len(boxes), bool))
    plan = plan_pairs([track], smoke().data, 1, {"got10k": 12}).datasets["got10k"]
    return ShardTask("got10k", 0, "test", plan.videos(pack_shards(plan, 100)[0]))


def test_with_the_option_off_a_shard_is_byte_identical_to_the_full_decode_and_on_it_differs_only_in_pixels(tmp_path):
    # large boxes (factor 2 and 4) and a small one (factor 1) on 1280x720 frames
    boxes = [(380.0, 170.0, 900.0, 560.0), (100.0, 60.0, 1200.0, 700.0), (600.0, 300.0, 660.0, 380.0),
             (400.0, 150.0, 880.0, 600.0)]
    task = _task(tmp_path, boxes)
    off = CropSettings.from_config(apply_overrides(smoke(), ["data.reduced_decode=false"]))
    on = CropSettings.from_config(apply_overrides(smoke(), ["data.reduced_decode=true"]))
    assert not off.reduced_decode and on.reduced_decode
    assert not paper().data.reduced_decode and smoke().data.reduced_decode  # official full decode in paper
    t_off, c_off, _ = crop_shard(task, off)
    t_on, c_on, _ = crop_shard(task, on)
    assert "decoded_at" not in c_off and c_on["frames_used"] == c_off["frames_used"] == 4
    assert c_on["decoded_at"] == {"1": 1, "2": 2, "4": 1}

    # off: every stored JPEG is the full-decode crop, byte for byte (today's shard), and so is the file
    rows = t_off.to_pylist()
    assert rows
    for row in rows:
        for role, side in (("template", off.template_side), ("search", off.search_side)):
            frame = int(row[f"{role}_frame"])
            image, _ = decode_image(tmp_path / f"{frame}.jpg")
            alone = crop_region(image, boxes[frame], side)
            assert row[f"{role}_jpeg"] == encode_jpeg(alone.image, off.jpeg_quality)
    legacy = CropSettings(off.template_side, off.search_side, off.context_amount, off.crop_size,
                          off.exemplar_size, off.jpeg_quality)  # the settings as they were before the option
    assert parquet_bytes(crop_shard(task, legacy)[0]).to_pybytes() == parquet_bytes(t_off).to_pybytes()

    # on: the same rows and geometry (full-resolution boxes, image sizes), crops within the PSNR floor
    assert t_on.column_names == t_off.column_names
    for name in t_off.column_names:
        if not name.endswith("_jpeg"):
            assert t_on.column(name).equals(t_off.column(name)), name
    diff = 0
    for a, b in zip(rows, t_on.to_pylist(), strict=True):
        for role in ("template", "search"):
            ia, ib = (cv2.imdecode(np.frombuffer(r[f"{role}_jpeg"], np.uint8), cv2.IMREAD_COLOR) for r in (a, b))
            assert ia.shape == ib.shape and _psnr(ia, ib) >= 30.0
            diff += a[f"{role}_jpeg"] != b[f"{role}_jpeg"]
    assert diff > 0
