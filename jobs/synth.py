"""``ocean synth``: write synthetic datasets and benchmarks in the real on-disk layouts."""

from __future__ import annotations

import argparse

from jobs.common import main_for

COMMAND = "synth"
HELP = "write small synthetic datasets (six training layouts + OTB/VOT/GOT-10k/LaSOT benchmarks)"
DESCRIPTION = """\
Write synthetic tracking data in the exact layouts of the real downloads, so every reader, the
`ocean prepare` job and the evaluation can run without the real datasets:

  DIR/got10k  DIR/lasot  DIR/vid  DIR/det  DIR/coco  DIR/ytbb        (use as `ocean prepare --dataset got10k=DIR/got10k ...`)
  DIR/benchmarks/otb  DIR/benchmarks/vot2018  DIR/benchmarks/got10k  DIR/benchmarks/lasot
  DIR/synth_manifest.json   (what was written, counts the readers must reproduce, broken items)

Targets are textured shapes that move smoothly, change scale and aspect, pass behind occluders and leave
the frame (the datasets' absence flags say so), among look-alike distractors on textured backgrounds.
The output is fully determined by --seed and --size. --size tiny takes a few seconds (unit tests);
--size small is a few times larger (the learning test); --size medium has 640x360 frames and 4x the
training videos of small (the preparation benchmark, about a minute). --broken adds corrupt / truncated JPEGs, missing
frames, malformed annotation lines, NaN / negative / zero / outside boxes, an empty sequence and odd file
names; the manifest lists each one with the rejection reason a reader or a decoding job must give.
--busy S draws that share of the training scenes on busy backgrounds; --scenes K writes K times the
training videos and images (each scene of K=1 stays the same); the benchmarks are unchanged by both.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="destination folder (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same files (default 0)")
    parser.add_argument("--size", choices=("tiny", "small", "medium"), default="tiny", help="how much to write (default tiny)")
    parser.add_argument("--broken", action="store_true", help="also write broken inputs (listed in the manifest)")
    parser.add_argument("--busy", type=float, default=0.0, metavar="S",
                        help="share of training scenes on busy backgrounds, 0..1 (default 0)")
    parser.add_argument("--scenes", type=int, default=1, metavar="K",
                        help="K times the training videos and images of --size (default 1)")


def run(args: argparse.Namespace) -> int:
    from data_prep.synthetic import generate
    from jobs.common import check_synthetic_options

    check_synthetic_options(args.size, args.scenes, args.busy)
    manifest = generate(args.out, seed=args.seed, size=args.size, broken=args.broken, busy=args.busy,
                        scenes=args.scenes)
    print(f"wrote synthetic data (seed {manifest['seed']}, size {manifest['size']}, scenes x{manifest['scenes']}) "
          f"to {args.out}")
    for name, info in manifest["datasets"].items():
        exp = info["expected"]
        exp = exp.get("videos", exp.get("frames")) if name == "ytbb" else exp
        print(f"  {name:7s} {info['files']:5d} files  {exp['tracks']:4d} tracks  {exp['frames']:5d} frames")
    for name, info in manifest["benchmarks"].items():
        print(f"  benchmarks/{name:8s} {len(info['sequences']):3d} sequences  {info['frames']:5d} frames")
    if manifest["broken_items"]:
        print(f"  broken items: {len(manifest['broken_items'])} (see synth_manifest.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
