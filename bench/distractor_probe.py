"""How far visual distractors move an encoder's features, and whether a probe fit on clean frames
still reads the state from them: a policy's robustness question, asked of its features alone.

    python bench/distractor_probe.py --size 64 --encoder vae --weights 616b501924f6 c8ac15cbc442

The door demos are rendered twice by the render stage (cache hits when the workspace has them):
clean, and at mixed levels (``env.distractor_levels=0,1,2,3``: demo i at level i % 4 in its own
seeded scene), so the same states with other pixels. Each encoder (one per ``--weights``) encodes
both renders (the encode stage: cache hits again). Printed per encoder and level, over the demos
the mixed render shows at that level:

- shift: the mean distance between a frame's features in the two renders, over the mean distance
  between the clean features of two random frames (the spread across states); 0 at level 0.
- R^2 of a ridge probe (``pipeline/encoders/probe.py``) fit on clean features, as a policy trained
  online on clean frames sees them, for each target of the task (hinge, latch, handle, palm).
  Group k-fold over demos: each demo is predicted by a probe that never saw it, once from its
  clean features and once from its distracted ones; alpha is chosen per target on the clean
  predictions, the same for both. A third probe is fit and scored on the mixed render (alpha
  chosen there): what the features still hold once the read-out has seen the distractors.

Rows are features only (no proprioception): what the policy must read from the image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.encoders.probe import RidgePath, load_probe_data, r2_scores, row_demos, target_columns
from pipeline.outputs import store_root
from pipeline.runner import Runner
from pipeline.vae.resolve import resolve_trained_weights
from stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
SHARED_DEMOS = ROOT.parent / "shared/data/adroit-demos/door-v0_demos.pickle"
ALPHAS = tuple(10.0**k for k in range(-3, 7))
TASK = "door"  # the demos rendered; its probe targets


def encoded(data: Path, overrides: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, states, episode ends) of one render encoded by one encoder."""
    config = resolve_trained_weights(PipelineConfig().with_overrides(overrides), data)
    runner = Runner(config, STAGES, data, log=print)
    runner.run("encode")
    render = runner.result("render")
    assert render is not None
    d = load_probe_data(store_root(runner.config, data), runner.key("encode"),
                        str(render.file("episodes_file")), runner.config.task, include_proprio=False)
    return d.features, d.state, d.episode_ends


def spread(clean: np.ndarray, rng: np.random.Generator) -> float:
    """The mean distance between the clean features of two random frames."""
    a, b = rng.integers(0, len(clean), (2, 20_000))
    return float(np.linalg.norm(clean[a] - clean[b], axis=1).mean())


def shift(clean: np.ndarray, mixed: np.ndarray, rows: np.ndarray, scale: float) -> float:
    return float(np.linalg.norm(mixed[rows] - clean[rows], axis=1).mean() / scale)


def out_of_fold(fit: np.ndarray, scored: dict[str, np.ndarray], y: np.ndarray, demo: np.ndarray,
                folds: int, seed: int) -> dict[str, np.ndarray]:
    """Out-of-fold predictions of ``y`` (alphas, rows, dims) from each of ``scored``'s features,
    by probes fit on ``fit``'s rows of the other demos."""
    order = np.random.default_rng(seed).permutation(int(demo.max()) + 1)
    pred = {name: np.zeros((len(ALPHAS), *y.shape)) for name in scored}
    varying = np.ptp(fit, axis=0) > 0
    for k in range(folds):
        held = np.isin(demo, order[k::folds])
        path = RidgePath(fit[~held][:, varying], y[~held])
        for name, x in scored.items():
            rotated = path.rotate(x[held][:, varying])
            for i, alpha in enumerate(ALPHAS):
                pred[name][i][held] = path.predict_rotated(rotated, alpha)
    return pred


def at_best_alpha(pred: np.ndarray, y: np.ndarray, groups: list[tuple[str, list[int]]],
                  apply_to: np.ndarray | None = None) -> np.ndarray:
    """Each target's predictions at the alpha with the least pooled error of ``pred`` on its own
    rows, taken from ``apply_to`` (other features' predictions by the same probes) if given."""
    source = pred if apply_to is None else apply_to
    out = np.zeros_like(y)
    for _, cols in groups:
        errors = [((pred[i][:, cols] - y[:, cols]) ** 2).sum() for i in range(len(ALPHAS))]
        out[:, cols] = source[int(np.argmin(errors))][:, cols]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--demos", type=Path, default=SHARED_DEMOS)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--encoder", default="vae")
    p.add_argument("--weights", nargs="+", required=True, help="one encoder per weights value")
    p.add_argument("--levels", default="0,1,2,3", help="the mixed render's env.distractor_levels")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    base = {"demos.path": str(args.demos), "env.width": str(args.size),
            "env.height": str(args.size), "encode.encoder": args.encoder}
    lines = []
    for weights in args.weights:
        ours = {**base, "encode.weights": weights}
        clean, y_all, ends = encoded(args.data, ours)
        mixed, y_mixed, ends_mixed = encoded(args.data, {**ours, "env.distractor_levels": args.levels})
        if not (np.array_equal(ends, ends_mixed) and np.allclose(y_all, y_mixed)):
            raise SystemExit("the two renders do not hold the same demo states: re-render both")
        cols, groups = target_columns(TASK)
        demo = row_demos(ends)
        level_of_row = np.asarray(levels)[demo % len(levels)]
        y = y_all[:, cols]
        on_clean = out_of_fold(clean, {"clean": clean, "mixed": mixed}, y, demo, args.folds, args.seed)
        on_mixed = out_of_fold(mixed, {"mixed": mixed}, y, demo, args.folds, args.seed)
        # Alpha: chosen on the fitted kind of frames, then the same for frames the probe never saw.
        best = {"c>c": at_best_alpha(on_clean["clean"], y, groups),
                "c>d": at_best_alpha(on_clean["clean"], y, groups, apply_to=on_clean["mixed"]),
                "m>m": at_best_alpha(on_mixed["mixed"], y, groups)}
        scale = spread(clean, np.random.default_rng(args.seed))
        lines.append(f"\n{args.encoder} weights {weights} ({clean.shape[1]} features, "
                     f"{len(ends)} demos, {args.folds} folds over demos); R^2 per target: "
                     "fit clean > scored clean / fit clean > scored distracted / "
                     "fit on the mixed render > scored on it")
        lines.append("level  demos  shift | " + " | ".join(f"{n:^20}" for n, _ in groups))
        for level in levels:
            rows = level_of_row == level
            cells = []
            for _, c in groups:
                r2 = [np.nanmean(r2_scores(y[rows][:, c], best[k][rows][:, c]))
                      for k in ("c>c", "c>d", "m>m")]
                cells.append(" / ".join(f"{v:5.2f}" for v in r2).rjust(20))
            n = len(np.unique(demo[rows]))
            lines.append(f"{level:>5}  {n:>5}  {shift(clean, mixed, np.flatnonzero(rows), scale):5.2f} | "
                         + " | ".join(cells))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
