"""``gahb data``: prepare a dataset once (read, grayscale, deduplicate, cache) and inspect it."""

from __future__ import annotations

import json
from gahb.cli.common import DEVICE_HELP, HelpFormatter, add_runtime_flags

SPEC_HELP = """\
dataset specs:
  fashion-mnist                   IDX files in /usr/share/datasets/fashion-mnist
                                  (sudo apt-get install dataset-fashion-mnist)
  fashion-mnist:DIR               the same IDX files from another folder
  folder:DIR                      PNG/JPEG images (sorted order, all the same size)
  npy:FILE.npy | npy:FILE.npz#KEY (N,H,W), (N,H,W,C) or (N,C,H,W); uint8 or float in [0,1]
  celeba:DIR/img_align_celeba     paper preprocessing: crop rows 29:-29, cols 9:-9, bicubic to --size (80)
  lsun:DIR                        paper preprocessing: top-left 256x256 crop, bicubic to --size (80)
  patches:DIR[:size=40,stride=40] square patches on a grid centred in each photograph (default 40x40,
                                  non-overlapping); S1, S2 and the test set share no photograph
  DIR                             an already prepared dataset directory (has manifest.json)

Prepared datasets go to $GAHB_CACHE/datasets/<name> (default ~/.cache/gahb/datasets/<name>)
unless --out is given; training (`gahb train --dataset SPEC`) finds them there.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="prepare and inspect datasets (read, grayscale, deduplicate, cache)",
        description="Prepare datasets as the paper does (crop/resize, RGB mean to gray, remove images "
                    "whose 20x20-pooled correlation with an earlier image exceeds 0.95) and cache them "
                    "for training.",
        epilog=SPEC_HELP, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    prep = sub.add_parser(
        "prepare", help="read, preprocess and deduplicate a dataset into the cache",
        description="Read DATASET once, convert to grayscale, remove near-duplicates and write "
                    "images.npy + manifest.json (atomic). Reuses an existing cache built with the same "
                    "settings unless --force.",
        epilog=SPEC_HELP, formatter_class=HelpFormatter)
    prep.add_argument("dataset", metavar="DATASET", help="dataset spec (see below)")
    prep.add_argument("--size", type=int, default=None,
                      help="output size in pixels (square); default 80 for celeba/lsun, native otherwise")
    prep.add_argument("--channels", type=int, choices=(1, 3), default=1,
                      help="1 = grayscale by RGB mean (the paper), 3 = keep RGB")
    prep.add_argument("--out", default=None, help="output directory (default: the cache directory)")
    prep.add_argument("--cache-dir", default=None,
                      help="root holding prepared datasets (default $GAHB_CACHE/datasets or "
                           "~/.cache/gahb/datasets)")
    prep.add_argument("--no-dedup", action="store_true", help="keep near-duplicates")
    prep.add_argument("--threshold", type=float, default=None,
                      help="|correlation| above which the later image of a pair is removed "
                           "(default 0.95 as in the paper; 0.999 for fashion-mnist, see docs)")
    prep.add_argument("--workers", type=int, default=1, help="decoder threads for image folders")
    prep.add_argument("--force", action="store_true", help="rebuild even if a matching cache exists")
    prep.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")
    add_runtime_flags(prep, device_help="device for the dedup pair pass: " + DEVICE_HELP, progress="no_progress")
    prep.set_defaults(func=_prepare)

    info = sub.add_parser(
        "info", help="show a prepared dataset: pool size, max N per half, manifest",
        description="Show a prepared dataset without rebuilding it: pool size, the largest training "
                    "subset N that keeps S1 and S2 disjoint, and the manifest.",
        epilog=SPEC_HELP, formatter_class=HelpFormatter)
    info.add_argument("dataset", metavar="DATASET", help="dataset spec or prepared directory")
    info.add_argument("--size", type=int, default=None, help="size the dataset was prepared at")
    info.add_argument("--channels", type=int, choices=(1, 3), default=1, help="channels it was prepared with")
    info.add_argument("--no-dedup", action="store_true", help="look for the non-deduplicated cache")
    info.add_argument("--threshold", type=float, default=None,
                      help="dedup threshold it was prepared with (default: the dataset's default)")
    info.add_argument("--cache-dir", default=None, help="root holding prepared datasets")
    info.add_argument("--n-test", type=int, default=None,
                      help="held-out test-set size used for max N (default min(1000, pool // 10))")
    info.add_argument("--verify", choices=("auto", "full", "shape"), default="auto",
                      help="re-hash the array (full), check shape/dtype only, or full up to 1 GiB")
    info.add_argument("--json", action="store_true", help="print JSON")
    add_runtime_flags(info, device=False)
    info.set_defaults(func=_info)


def _summary(pool, split) -> dict:
    m = pool.manifest
    return {"path": str(pool.path), "spec": m.get("spec"), "images": len(pool),
            "source_images": m["source"]["n_images"], "duplicates_removed": m["dedup"].get("n_removed", 0),
            "shape": m["array"]["shape"], "dtype": m["array"]["dtype"], "scale": m["array"]["scale"],
            "sha256": m["array"]["sha256"], "n_test": split.n_test, "max_n": split.max_n}


def _print_summary(s: dict, pool, seconds: float | None = None) -> None:
    d = pool.manifest["dedup"]
    dedup = (f"{s['duplicates_removed']} near-duplicates removed (|corr| > {d['threshold']} after "
             f"{d['pool_size']}x{d['pool_size']} pooling)" if d.get("enabled") else "no deduplication")
    print(f"dataset   {s['spec']}")
    print(f"images    {s['images']} kept of {s['source_images']} read; {dedup}")
    print(f"shape     {' x '.join(map(str, s['shape']))} (N, C, H, W), {s['dtype']} (pixel = stored / {s['scale']:g})")
    print(f"max N     {s['max_n']} per training half (S1, S2), with {s['n_test']} test images held out")
    if pool.groups is not None:
        print(f"grouped   by {pool.manifest['groups']['by']}: {pool.manifest['groups']['n_groups']} of them; "
              "S1, S2 and the test set share none")
    print(f"sha256    {s['sha256']}")
    print(f"written   {s['path']}")
    if seconds is not None:
        print(f"time      {seconds:.1f} s (this call)")


def _prepare(args) -> int:
    import time

    from gahb.data import prepare_dataset

    t0 = time.perf_counter()
    pool = prepare_dataset(args.dataset, args.out, size=args.size, channels=args.channels,
                           dedup=not args.no_dedup, threshold=args.threshold, cache_dir=args.cache_dir,
                           force=args.force, workers=args.workers, progress=not args.no_progress,
                           device=args.device)
    seconds = time.perf_counter() - t0
    s = _summary(pool, pool.split())
    if args.json:
        print(json.dumps({"summary": s, "manifest": pool.manifest}, indent=2))
    else:
        _print_summary(s, pool, seconds)
    return 0


def _info(args) -> int:
    from gahb.data import load_pool

    pool = load_pool(args.dataset, size=args.size, cache_dir=args.cache_dir, dedup=not args.no_dedup,
                     channels=args.channels, threshold=args.threshold, prepare=False, verify=args.verify)
    s = _summary(pool, pool.split(n_test=args.n_test))
    if args.json:
        print(json.dumps({"summary": s, "manifest": pool.manifest}, indent=2))
    else:
        _print_summary(s, pool)
        print("manifest:")
        print(json.dumps({k: v for k, v in pool.manifest.items() if k != "request"}, indent=2))
    return 0
