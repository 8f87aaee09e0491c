"""The pairs a dataset can supply (data_prep.pairs.pair_bound, facts §7.6) and the cap the job puts on pair
counts: hand-made track tables, the sampler's own support, the tiny synthetic tree and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep.listing import cap_message, list_datasets
from data_prep.pairs import pair_bound, plan_dataset, plan_pairs
from data_prep.tracks import FrameRef, Track, TrackTable
from ocean.config import DataConfig, smoke


def track(dataset: str, video: str, track_id: str, present) -> Track:
    present = np.asarray(present, bool)
    n = len(present)
    frames = [FrameRef(f"{i:06d}", path=f"/data/{video}/{i:06d}.jpg") for i in range(n)]
    return Track(dataset, video, track_id, frames, np.tile([1.0, 2.0, 30.0, 40.0], (n, 1)), present)


def table(dataset: str, tracks: list[Track], **kw) -> TrackTable:
    return TrackTable.from_tracks(dataset, tracks, **kw)


def brute_force(tracks: list[Track], frame_range: int) -> int:
    """Distinct (track, template, search) of present frames at most RANGE apart, by enumeration."""
    return sum(1 for t in tracks for i in range(len(t)) for j in range(len(t))
               if t.present[i] and t.present[j] and abs(i - j) <= frame_range)


# ------------------------------------------------------------------------------------------------------
# the bound on hand-made tables


def test_bound_of_a_track_with_absent_frames_hand_computed():
    # present positions 0, 2, 3, 5; RANGE 1: windows {0}, {2, 3}, {2, 3}, {5} -> 1 + 2 + 2 + 1
    t = track("got10k", "v", "0", [1, 0, 1, 1, 0, 1])
    assert pair_bound(table("got10k", [t]), 1) == 6
    assert pair_bound(table("got10k", [t]), 2) == 2 + 3 + 3 + 2  # 0:{0,2} 2:{0,2,3} 3:{2,3,5} 5:{3,5}
    assert pair_bound(table("got10k", [t]), 100) == 16  # all four within RANGE of each other: 4 x 4
    assert pair_bound(table("got10k", [t]), 0) == 4  # each present frame with itself


def test_bound_of_still_images_is_one_pair_per_present_object():
    tracks = [track("coco", f"img{i}", str(j), [True]) for i in range(5) for j in range(i % 3 + 1)]
    tracks.append(track("coco", "img9", "0", [False]))  # an absent object supplies nothing
    assert pair_bound(table("coco", tracks), 1) == sum(i % 3 + 1 for i in range(5)) == 9  # 1 + 2 + 3 + 1 + 2
    assert pair_bound(table("det", [track("det", "a", "0", [True])]), 100) == 1


def test_bound_of_a_track_shorter_than_the_range():
    short, long_ = track("vid", "a", "0", [True] * 5), track("vid", "b", "0", [True] * 12)
    assert pair_bound(table("vid", [short]), 100) == 25  # 5 x 5, the window clipped at both ends
    # RANGE 3 on 12 frames: 12 x 7 less the clipped ends (3 + 2 + 1 at each end)
    assert pair_bound(table("vid", [long_]), 3) == 12 * 7 - 2 * (3 + 2 + 1)
    assert pair_bound(table("vid", [short, long_]), 3) == brute_force([short, long_], 3)
    assert pair_bound(table("vid", []), 3) == 0


def test_bound_equals_enumeration_for_any_chunking_and_spilled_tables(tmp_path):
    rng = np.random.default_rng(11)
    for case in range(20):
        tracks = [track("ytbb", f"v{i % 4}", str(i), rng.random(int(rng.integers(1, 30))) < rng.random())
                  for i in range(int(rng.integers(1, 9)))]
        frame_range = int(rng.integers(0, 12))
        expect = brute_force(tracks, frame_range)
        assert pair_bound(table("ytbb", tracks), frame_range) == expect, case
        assert pair_bound(table("ytbb", tracks), frame_range, chunk_frames=int(rng.integers(1, 9))) == expect
        spilled = table("ytbb", tracks, spill_dir=tmp_path, chunk_frames=7)
        assert pair_bound(spilled, frame_range, chunk_frames=5) == expect
    with pytest.raises(ValueError, match="frame_range"):
        pair_bound(table("ytbb", tracks), -1)


def test_bound_is_exactly_the_support_of_the_sampler():
    """Drawn far more often than it has pairs, the uncapped sampler produces every pair the bound counts and no
    other: the bound is the number of pairs the sampling rules can produce (facts §7.4, §7.6)."""
    tracks = [track("got10k", "a", "0", [1, 1, 0, 1, 1, 1, 0, 0, 1]), track("got10k", "a", "1", [0, 1, 1]),
              track("got10k", "b", "0", [1] * 4), track("got10k", "c", "0", [0, 0])]
    for frame_range in (0, 2, 100):
        plan = plan_dataset("got10k", tracks, 20_000, frame_range, seed=4)
        columns = (plan.track_index, plan.template_index, plan.search_index)
        drawn = set(zip(*(c.tolist() for c in columns), strict=True))
        assert len(drawn) == plan.bound == brute_force(tracks, frame_range), frame_range


# ------------------------------------------------------------------------------------------------------
# the cap


def test_cap_only_bites_when_the_data_cannot_supply_the_request():
    tracks = [track("got10k", f"v{i}", "0", [True] * (3 + i)) for i in range(3)]  # 9 + 16 + 25 = 50 pairs
    assert pair_bound(table("got10k", tracks), 100) == 50
    for n in (0, 7, 50):  # within the bound: exactly the uncapped plan
        capped, free = (plan_dataset("got10k", tracks, n, 100, seed=2, cap=c) for c in (True, False))
        assert len(capped) == n and not capped.capped
        for name in ("track_index", "template_index", "search_index"):
            assert np.array_equal(getattr(capped, name), getattr(free, name))
    capped = plan_dataset("got10k", tracks, 51, 100, seed=2, cap=True)
    again = plan_dataset("got10k", list(reversed(tracks)), 51, 100, seed=2, cap=True)
    assert (len(capped), capped.requested, capped.bound, capped.capped) == (50, 51, 50, True)
    assert [p.pair_id for p in capped.pairs()] == [p.pair_id for p in again.pairs()]  # same seed, same plan
    assert len(plan_dataset("got10k", tracks, 51, 100, seed=2)) == 51  # the sampler alone is not capped


def test_plan_pairs_caps_default_and_explicit_counts():
    data = DataConfig(pairs_per_epoch={"coco": 50, "got10k": 5}, frame_range={"coco": 1, "got10k": 100},
                      pool_factor=4)
    coco = [track("coco", f"img{i}", "0", [True]) for i in range(5)]
    got = [track("got10k", "v", "0", [True] * 3)]
    plan = plan_pairs(coco + got, data, seed=0)
    assert {n: (p.requested, p.bound, len(p)) for n, p in plan.datasets.items()} == {
        "coco": (200, 5, 5), "got10k": (20, 9, 9)}
    explicit = plan_pairs(coco + got, data, seed=0, pairs={"coco": 3, "got10k": 1000})
    assert {n: (p.requested, len(p), p.capped) for n, p in explicit.datasets.items()} == {
        "coco": (3, 3, False), "got10k": (1000, 9, True)}


def test_cap_message_says_default_or_explicit_and_nothing_when_not_capped():
    assert cap_message("got10k", 10, 50, 10, explicit=True) is None
    assert cap_message("got10k", 10, 5, 10, explicit=False) is None  # uncapped plan (cap=False): nothing to say
    warn = cap_message("coco", 240_000, 5, 5, explicit=True, flag="--pairs")
    assert warn == ("warning: coco: --pairs of 240000 pairs capped at 5: its annotated frames can supply 5 "
                    "distinct template/search pairs within the frame range (facts §7.6)")
    note = cap_message("coco", 240_000, 5, 5, explicit=False)
    assert note.startswith("coco: the default 240000 pairs (pairs_per_epoch x pool_factor) capped at 5: ")


# ------------------------------------------------------------------------------------------------------
# the job's listing on the tiny synthetic tree, and the command line


def test_listing_caps_the_tiny_synthetic_tree_and_says_so(synth, tmp_path):
    root, _ = synth
    cfg = smoke()
    names = ("got10k", "det", "coco")
    roots = {n: str(root / n) for n in names}
    said: list[str] = []
    default = {n: cfg.data.pairs_per_epoch[n] * cfg.data.pool_factor for n in names}  # 800, 200, 200
    states = list_datasets(roots, cfg, 0, default, 8, None, str(tmp_path), said.append)
    for name, st in states.items():
        assert st.bound == pair_bound(st.plan.tracks, cfg.data.frame_range[name])
        assert st.planned == len(st.plan) == min(st.requested, st.bound)
    assert states["got10k"].planned == 800 < states["got10k"].bound  # enough data: the request stands
    for name in ("det", "coco"):  # one object per still image: far fewer than 200
        st = states[name]
        assert st.planned == st.bound < 200 and not st.explicit
        assert sum(len(d) for d in st.shards) == st.planned
        assert cap_message(name, 200, st.bound, st.bound, False) in said
    assert not any(line.startswith("got10k: the default") for line in said)
    said.clear()
    explicit = list_datasets(roots, cfg, 0, {"got10k": 5, "det": 500, "coco": 4}, 8, None, str(tmp_path),
                             said.append, explicit=("got10k", "det", "coco"))
    assert [line for line in said if "capped" in line] == [
        cap_message("det", 500, states["det"].bound, states["det"].bound, True)]
    assert (explicit["got10k"].planned, explicit["coco"].planned) == (5, 4)


def test_cli_summary_records_requested_bound_planned_and_warns(tmp_path, capsys):
    """An explicit --pairs above the bound: the summary row and a warning line; the manifest records the three
    counts (an empty LaSOT root: no shard, so no Ray; the cap on real shards:
    tests/integration/test_prepare_cluster.py)."""
    from jobs.cli import main

    (tmp_path / "lasot").mkdir()
    out = tmp_path / "out"
    args = ["prepare", "--preset", "smoke", "--dataset", f"lasot={tmp_path / 'lasot'}", "--out", str(out),
            "--no-progress", "--listing", "driver"]
    assert main([*args, "--pairs", "lasot=5"]) == 0
    stdout = capsys.readouterr().out
    assert "| dataset | tracks | frames read | used | rejected | pairs requested | bound | planned |" in stdout
    assert "| lasot | 0 | 0 | 0 | 0 | 5 | 0 | 0 | 0 | 0 | 0 | 0.0 |" in stdout
    assert ("warning: lasot: --pairs of 5 pairs capped at 0: its annotated frames can supply 0 distinct "
            "template/search pairs within the frame range (facts §7.6)") in stdout
    d = json.loads((out / "manifest.json").read_text())["datasets"]["lasot"]
    assert (d["pairs_requested"], d["pairs_explicit"], d["pairs_bound"], d["pairs_planned"]) == (5, True, 0, 0)
    assert main([*args, "--out", str(tmp_path / "out2")]) == 0  # the default: 200 x 2, a note, not a warning
    stdout = capsys.readouterr().out
    assert "lasot: the default 400 pairs (pairs_per_epoch x pool_factor) capped at 0: " in stdout
    assert "warning:" not in stdout
