"""Training augmentation on stored crops (facts §7.5)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from data_prep.augment import (
    SideParams,
    add_noise,
    apply_side,
    augment_pairs,
    color_jitter,
    crop_window,
    draw_params,
    label_shift,
    static_occluder,
)
from data_prep.crops import crop511, crop_region, encode_jpeg
from ocean.config import AugmentConfig

MARK = (0, 0, 255)
NO_COLOR = AugmentConfig(color_jitter=0.0)


def textured(h: int = 360, w: int = 640, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    g = (g - g.min()) / (g.max() - g.min())
    base = (40 + 160 * g).astype(np.uint8)
    return np.dstack([base, base, np.clip(base.astype(int) - 10, 0, 255).astype(np.uint8)])


def official_crop_hwc(image: np.ndarray, window_xyxy, out_sz: int) -> np.ndarray:
    """TK _crop_hwc, written out independently of data_prep.augment."""
    x1, y1, x2, y2 = (float(v) for v in window_xyxy)
    a, b = (out_sz - 1) / (x2 - x1), (out_sz - 1) / (y2 - y1)
    m = np.array([[a, 0, -a * x1], [0, b, -b * y1]])
    return cv2.warpAffine(image, m, (out_sz, out_sz), borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def test_crop_window_hand_computed():
    p = SideParams(shift=(10.0, -5.0), scale=(1.1, 0.9))
    win, (sx, sy) = crop_window(255, p)
    # w = 280.5 -> x1 = 255 - 140.25 + 10; h = 229.5 -> y1 = 255 - 114.75 - 5
    np.testing.assert_allclose(win, [124.75, 135.25, 405.25, 364.75])
    assert (sx, sy) == (1.1, 0.9)
    # a shift past the frame is clamped so the window stays inside [0, 510]
    win, _ = crop_window(255, SideParams(shift=(400.0, 0.0), scale=(1.0, 1.0)))
    assert win[2] == pytest.approx(510.0)


@pytest.mark.parametrize("params", [
    SideParams(shift=(0.0, 0.0), scale=(1.0, 1.0)),
    SideParams(shift=(-63.0, 41.5), scale=(1.17, 0.83)),
    SideParams(shift=(64.0, -64.0), scale=(1.18, 1.18)),
])
def test_stored_crop_augment_equals_official_path(params):
    img = textured()
    box = [220.0, 110.0, 300.0, 200.0]
    full = crop511(img, box)
    stored = crop_region(img, box, 433)
    ours, _ = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 255, params)
    win, _ = crop_window(255, params)
    ref = official_crop_hwc(full, win, 255)
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    if params.shift == (0.0, 0.0) and params.scale == (1.0, 1.0):
        # zero augmentation = the central 255 window of crop511: [127.5, 382.5]
        np.testing.assert_array_equal(ref, official_crop_hwc(full, [127.5, 127.5, 382.5, 382.5], 255))


def test_template_side_official_path():
    img = textured(seed=3)
    box = [100.0, 50.0, 180.0, 150.0]
    full = crop511(img, box)
    stored = crop_region(img, box, 145)
    p = SideParams(shift=(-4.0, 3.9), scale=(1.05, 0.95))
    ours, box_t = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 127, p)
    win, _ = crop_window(127, p)
    assert np.abs(ours.astype(int) - official_crop_hwc(full, win, 127).astype(int)).max() <= 1
    # box: (box_511 - window corner) / scale per axis, with box_511 = stored box + offset
    b511 = stored.box_xyxy + stored.geometry.offset
    np.testing.assert_allclose(box_t, [(b511[0] - win[0]) / 1.05, (b511[1] - win[1]) / 0.95,
                                       (b511[2] - win[0]) / 1.05, (b511[3] - win[1]) / 0.95])


def _red_extent(image: np.ndarray):
    red = (image[..., 2] > 200) & (image[..., 0] < 60) & (image[..., 1] < 60)
    ys, xs = np.nonzero(red)
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_augmented_box_follows_the_marker():
    img = textured(seed=1)
    box = [260.0, 130.0, 340.0, 190.0]
    img[130:191, 260:341] = MARK  # pixel centres 260..340 x 130..190: the box's span (pixel i is centred at i)
    stored = crop_region(img, box, 433, box_mode="exact")
    rng = np.random.default_rng(5)
    for _ in range(10):
        _, ps = draw_params(rng, NO_COLOR)
        out, b = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 255, ps)
        x1, y1, x2, y2 = _red_extent(out)
        # the official box rule (b511 - corner) / scale differs from the exact warp of the box by the factor
        # (255 - 1) / 255; undo it, then compare with the red pixels (integer extents: 0.5 px quantisation,
        # and the colour threshold on two resampled edges trims up to ~0.7 px per edge)
        e = b * 254.0 / 255.0
        assert abs((e[0] + e[2]) / 2 - (x1 + x2) / 2) <= 0.75 and abs((e[1] + e[3]) / 2 - (y1 + y2) / 2) <= 0.75
        assert abs((e[2] - e[0]) - (x2 - x1)) <= 1.5 and abs((e[3] - e[1]) - (y2 - y1)) <= 1.5
        assert np.abs(b - e).max() <= 1.0  # the official rule stays within a pixel of the exact one
        # the requested shift moves the target the other way: centre ~ 127 - shift / scale
        cx = (b[0] + b[2]) / 2
        assert cx == pytest.approx(127 - ps.shift[0] / ps.scale[0], abs=1.5)


def test_flip_mirrors_box_and_shift():
    img = textured(seed=2)
    box = [200.0, 130.0, 260.0, 190.0]
    img[130:191, 200:261] = MARK
    stored = crop_region(img, box, 433, box_mode="exact")
    p = SideParams(shift=(30.0, 0.0), scale=(1.0, 1.0))
    plain, b = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 255, p)
    flipped, bf = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 255,
                             dataclasses.replace(p, flip=True))
    np.testing.assert_array_equal(flipped, plain[:, ::-1])
    np.testing.assert_allclose(bf, [254 - b[2], b[1], 254 - b[0], b[3]])
    assert label_shift(dataclasses.replace(p, flip=True)) == (-30.0, 0.0)
    x1, _, x2, _ = _red_extent(flipped)
    assert abs((bf[0] + bf[2]) / 2 - (x1 + x2) / 2) <= 1.0


def test_gray_and_blur_options():
    img = textured(seed=4)
    img[100:150, 300:380] = MARK
    stored = crop_region(img, [300.0, 100.0, 380.0, 150.0], 433)
    p = SideParams(shift=(0.0, 0.0), scale=(1.0, 1.0))
    g, _ = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 255, dataclasses.replace(p, gray=True))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    plain, _ = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 255, p)
    blurred, _ = apply_side(stored.image, stored.box_xyxy, stored.geometry.offset, 255,
                            dataclasses.replace(p, blur_size=15, blur_wx=0.5))
    # blur lowers local contrast (Laplacian energy)
    assert cv2.Laplacian(blurred, cv2.CV_32F).var() < 0.5 * cv2.Laplacian(plain, cv2.CV_32F).var()


def test_params_drawn_in_range_and_symmetric():
    cfg = AugmentConfig()
    rng = np.random.default_rng(0)
    draws = [draw_params(rng, cfg) for _ in range(2000)]
    s = np.array([d[1].shift for d in draws])
    sc = np.array([d[1].scale for d in draws])
    t = np.array([d[0].shift for d in draws])
    b = np.array([d[1].brightness for d in draws])
    assert np.abs(s).max() <= 64 and np.abs(t).max() <= 4
    assert sc.min() >= 0.82 and sc.max() <= 1.18
    assert abs(s.mean()) < 3 and abs(b.mean() - 1) < 0.005
    assert np.corrcoef(sc[:, 0], sc[:, 1])[0, 1] < 0.1  # independent x / y scales
    assert not any(d[1].flip or d[1].gray or d[1].blur_size for d in draws)  # all off by default
    # enabling an option does not move the geometric draws
    on = draw_params(np.random.default_rng(0), dataclasses.replace(cfg, flip_prob=1.0))
    assert on[1].shift == draws[0][1].shift and on[1].flip


def test_illumination_jitter_widens_brightness_and_contrast_only():
    official = AugmentConfig()
    assert official.illumination_jitter is None  # the official amplitude: color_jitter's
    lit = dataclasses.replace(official, illumination_jitter=0.4)
    same = dataclasses.replace(official, illumination_jitter=official.color_jitter)
    for seed in range(200):
        base = draw_params(np.random.default_rng(seed), official)
        wide = draw_params(np.random.default_rng(seed), lit)
        assert draw_params(np.random.default_rng(seed), same) == base  # equal to None when it equals color_jitter
        for b, w in zip(base, wide, strict=True):
            # the same uniforms, scaled: (f - 1) grows by 0.4 / 0.05, saturation / hue / geometry untouched
            assert w.brightness - 1 == pytest.approx((b.brightness - 1) * 8)
            assert w.contrast - 1 == pytest.approx((b.contrast - 1) * 8)
            assert dataclasses.replace(w, brightness=b.brightness, contrast=b.contrast) == b
    factors = np.array([[p.brightness, p.contrast] for s in range(2000)
                        for p in draw_params(np.random.default_rng(s), lit)])
    assert factors.min() >= 0.6 and factors.max() <= 1.4 and factors.min() < 0.62 and factors.max() > 1.38
    with pytest.raises(ValueError, match="illumination_jitter"):
        AugmentConfig(illumination_jitter=1.5)  # a factor 1 - 1.5 would go negative


def test_color_jitter_matches_torchvision():
    torch = pytest.importorskip("torch")
    tvf = pytest.importorskip("torchvision.transforms.functional")
    img = textured(64, 64, seed=5)
    img[:20, :20] = (30, 200, 90)  # some colour
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0  # BGR array taken as RGB (facts §7.5)
    cases = [
        (SideParams((0, 0), (1, 1), brightness=1.05, order=(0, 1, 2, 3)), lambda t: tvf.adjust_brightness(t, 1.05)),
        (SideParams((0, 0), (1, 1), contrast=0.95, order=(1, 0, 2, 3)), lambda t: tvf.adjust_contrast(t, 0.95)),
        (SideParams((0, 0), (1, 1), saturation=1.05, order=(2, 0, 1, 3)), lambda t: tvf.adjust_saturation(t, 1.05)),
        (SideParams((0, 0), (1, 1), hue=0.05, order=(3, 0, 1, 2)), lambda t: tvf.adjust_hue(t, 0.05)),
        (SideParams((0, 0), (1, 1), hue=-0.04, saturation=0.96, order=(3, 2, 0, 1)),
         lambda t: tvf.adjust_saturation(tvf.adjust_hue(t, -0.04), 0.96)),
        (SideParams((0, 0), (1, 1), brightness=0.96, contrast=1.04, order=(1, 0, 2, 3)),
         lambda t: tvf.adjust_brightness(tvf.adjust_contrast(t, 1.04), 0.96)),
    ]
    for params, ref_fn in cases:
        ref = (ref_fn(x) * 255.0).permute(1, 2, 0).numpy()
        ours = color_jitter(img, params).astype(np.float64)
        assert np.abs(ours - ref).max() <= 2.0, params
        assert np.abs(ours - ref).mean() <= 0.6, params


def _batch(n: int = 6, bad_row: int | None = None):
    img = textured(seed=6)
    box = [250.0, 120.0, 330.0, 200.0]
    img[120:200, 250:330] = MARK
    t = crop_region(img, box, 145)
    s = crop_region(img, box, 433)
    tj, sj = encode_jpeg(t.image, 90), encode_jpeg(s.image, 90)
    batch = {
        "pair_id": np.array([f"{i:016x}" for i in range(n)]),
        "template_jpeg": [tj] * n, "search_jpeg": [sj] * n,
        "template_box": np.tile(t.box_xyxy, (n, 1)).astype(np.float32),
        "search_box": np.array([np.asarray(s.box_xyxy, np.float32)] * n + [None], dtype=object)[:n],
        "template_offset": np.full(n, t.geometry.offset), "search_offset": np.full(n, s.geometry.offset),
        "template_side": np.full(n, 145), "search_side": np.full(n, 433),
    }
    if bad_row is not None:
        batch["search_jpeg"] = list(batch["search_jpeg"])
        batch["search_jpeg"][bad_row] = sj[: len(sj) // 3]
    return batch


def test_augment_pairs_shapes_determinism_and_row_independence():
    cfg = AugmentConfig()
    batch = _batch()
    a = augment_pairs(batch, cfg, seed=11)
    assert a["template"].shape == (6, 127, 127, 3) and a["template"].dtype == np.uint8
    assert a["search"].shape == (6, 255, 255, 3) and a["search_box"].shape == (6, 4)
    assert a["shift"].shape == (6, 2) and a["valid"].all() and list(a["error"]) == [""] * 6
    b = augment_pairs(batch, cfg, seed=11)
    for k in ("template", "search", "search_box", "shift"):
        np.testing.assert_array_equal(a[k], b[k])
    c = augment_pairs(batch, cfg, seed=12)
    assert not np.array_equal(a["shift"], c["shift"])
    # a row's result depends on (seed, pair_id) only, not on the batch it is in
    sub = {k: v[2:4] for k, v in batch.items()}
    d = augment_pairs(sub, cfg, seed=11)
    np.testing.assert_array_equal(d["search"], a["search"][2:4])
    np.testing.assert_array_equal(d["search_box"], a["search_box"][2:4])
    # the shift returned is the one drawn: the search box centre sits ~ at 127 - shift / scale
    centre = (a["search_box"][:, 0] + a["search_box"][:, 2]) / 2
    assert np.all(np.abs(centre - (127 - a["shift"][:, 0])) < 0.2 * np.abs(a["shift"][:, 0]) + 2)
    f = augment_pairs(batch, cfg, seed=11, chw_float=True)
    assert f["search"].shape == (6, 3, 255, 255) and f["search"].dtype == np.float32
    np.testing.assert_array_equal(f["search"][0].transpose(1, 2, 0), a["search"][0])


def test_augment_pairs_bad_jpeg_row_is_flagged_not_fatal():
    a = augment_pairs(_batch(bad_row=3), AugmentConfig(), seed=0)
    assert list(a["valid"]) == [True, True, True, False, True, True]
    assert a["error"][3] == "search:truncated_jpeg"
    assert np.isnan(a["search_box"][3]).all() and not a["search"][3].any()


def test_augment_pairs_refuses_too_small_stored_crops():
    with pytest.raises(ValueError, match="search_side"):
        augment_pairs(_batch(), AugmentConfig(search_shift=100.0), seed=0)


def test_occlusion_and_noise_move_no_official_draw():
    batch = _batch()
    plain = augment_pairs(batch, AugmentConfig(), seed=7)
    occ = augment_pairs(batch, AugmentConfig(occlusion_prob=1.0), seed=7)
    noisy = augment_pairs(batch, AugmentConfig(noise_sigma=6.0), seed=7)
    for k in ("template_box", "search_box", "shift"):  # geometry and labels untouched by either step
        np.testing.assert_array_equal(occ[k], plain[k])
        np.testing.assert_array_equal(noisy[k], plain[k])
    for i in range(6):
        for k in ("template", "search"):
            changed = (occ[k][i] != plain[k][i]).any(-1)
            assert changed.any(), (i, k)  # every row occluded, in both crops, at probability 1
        x1, y1, x2, y2 = np.round(plain["template_box"][i]).astype(int)
        t_changed = (occ["template"][i] != plain["template"][i]).any(-1)
        assert t_changed[max(y1, 0):y2, max(x1, 0):x2].any(), i  # the template's occluder is on the target
    for k in ("template", "search"):  # noise on both sides, a few grey levels on average
        diff = noisy[k].astype(int) - plain[k].astype(int)
        assert 0.3 < np.abs(diff).mean() < 6.0, k
    some = augment_pairs(batch, AugmentConfig(occlusion_prob=0.5), seed=7)
    hit = [not np.array_equal(some["search"][i], plain["search"][i]) for i in range(6)]
    assert 0 < sum(hit) < 6  # seeded: some rows but not all at 0.5
    for i in np.flatnonzero(hit):  # an occluded row is the p = 1 row's occlusion (same uniforms)
        np.testing.assert_array_equal(some["search"][i], occ["search"][i])
        np.testing.assert_array_equal(some["template"][i], occ["template"][i])


@pytest.mark.parametrize("band", [True, False])
def test_static_occluder_stays_where_the_target_left_it(band):
    """A flat-coloured occluder on the template's target reappears in the search crop at its offset from
    the target plus the drawn displacement, with the same colour, and nowhere else."""
    rng = np.random.default_rng(1)
    template = rng.integers(0, 256, (127, 127, 3), dtype=np.uint8)
    search = rng.integers(0, 256, (255, 255, 3), dtype=np.uint8)
    t_box, s_box = np.array([40.0, 50.0, 90.0, 80.0]), np.array([100.0, 110.0, 150.0, 140.0])  # same size
    u = np.array([0.2 if band else 0.9, 0.3, 0.5, 0.5, 0.5, 0.0, 0.5, 0.2, 0.1, 0.6, 0.9, 0.0])
    t_out, s_out = static_occluder(template, t_box, search, s_box, u)
    colour = (np.array([0.1, 0.6, 0.9]) * 255).astype(np.uint8)
    t_mask, s_mask = (t_out != template).any(-1), (s_out != search).any(-1)
    assert (t_out[t_mask] == colour).all() and (s_out[s_mask] == colour).all()
    ty, tx = np.nonzero(t_mask)
    sy, sx = np.nonzero(s_mask)
    d = (0.3 + 1.2 * 0.5) * 40.0  # reach: 0.3-1.5 mean target sides; u5 = 0: along +x
    assert tx.mean() == pytest.approx(65.0, abs=1.0)  # centred on the box (u3 = 0.5)
    assert sx.mean() == pytest.approx(125.0 + d, abs=1.0)  # the target's offset, moved by d
    if band:  # a vertical band: the whole height of both crops, 20-60 % of the box's width
        assert set(ty) == set(range(127)) and set(sy) == set(range(255))
        assert tx.max() - tx.min() + 1 == pytest.approx(0.4 * 50, abs=1.5)
    else:  # a rectangle inside the template's box, the same size in the search
        assert tx.min() >= 40 and tx.max() < 90 and ty.min() >= 50 and ty.max() < 80
        assert t_mask.sum() == s_mask.sum() and 0.08 * 1500 <= t_mask.sum() <= 0.52 * 1500
    assert t_out is not template and s_out is not search


def test_add_noise_has_the_asked_spread():
    grey = np.full((200, 200, 3), 128, dtype=np.uint8)
    noisy = add_noise(grey, 5.0, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and abs(noisy.astype(float).std() - 5.0) < 0.1
    assert abs(noisy.astype(float).mean() - 128) < 0.1
    assert add_noise(grey, 0.0, np.random.default_rng(0)) is grey
    with pytest.raises(ValueError, match="noise_sigma"):
        AugmentConfig(noise_sigma=-1.0)
    with pytest.raises(ValueError, match="occlusion_prob"):
        AugmentConfig(occlusion_prob=1.5)


@pytest.mark.parametrize("hue", [0.3, -0.45, 0.999, -0.999, 1.25, -2.1])
def test_hue_step_wraps_like_a_float32_modulo(hue):
    """The hue step works on a split hue plane with one conditional wrap; it must equal the plain float32
    ``(h + 360 hue) mod 360`` on the HSV image, for shifts near and beyond a whole turn."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    hsv = cv2.cvtColor(image.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2HSV)
    turns = hue if abs(hue) < 1 else float(np.fmod(hue, 1.0))
    hsv[..., 0] = (hsv[..., 0] + np.float32(360.0 * turns)) % np.float32(360.0)
    want = cv2.convertScaleAbs(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), alpha=255.0)
    got = color_jitter(image, SideParams((0, 0), (1, 1), hue=hue, order=(3, 0, 1, 2)))
    np.testing.assert_array_equal(got, want)


def test_negative_pairs_take_another_videos_template_and_change_nothing_else():
    batch = _batch()
    batch["dataset"] = np.array(["got10k"] * 6)
    batch["video"] = np.array(["a", "a", "b", "b", "c", "c"])
    plain = augment_pairs(batch, AugmentConfig(), seed=5)
    assert not plain["negative"].any()
    neg = augment_pairs(batch, AugmentConfig(negative_prob=0.7), seed=5)
    rows = np.flatnonzero(neg["negative"])
    assert 0 < len(rows) < 6  # 0.7 of 6 rows, seeded: some but (this seed) not all
    for i in rows:  # the template is another video's augmented template; the search is unchanged
        same = [j for j in range(6) if np.array_equal(neg["template"][i], plain["template"][j])]
        assert same and all(batch["video"][j] != batch["video"][i] for j in same)
    keep = np.flatnonzero(~neg["negative"])
    np.testing.assert_array_equal(neg["template"][keep], plain["template"][keep])
    for k in ("search", "search_box", "shift"):  # the positives' draws do not move with negative_prob
        np.testing.assert_array_equal(neg[k], plain[k])
    again = augment_pairs(batch, AugmentConfig(negative_prob=0.7), seed=5)
    np.testing.assert_array_equal(again["negative"], neg["negative"])
    np.testing.assert_array_equal(again["template"], neg["template"])
    one_video = dict(batch, video=np.array(["a"] * 6))  # no other video to take a template from
    assert not augment_pairs(one_video, AugmentConfig(negative_prob=1.0), seed=5)["negative"].any()
