"""Figures of the transition study (:mod:`gahb.studies.transition`) that are not library figures."""

from __future__ import annotations

from pathlib import Path


def _sample_grid_figure(per_n_samples: dict, per_n_nearest: dict, per_n_status: dict, path: Path, count: int,
                        titles: dict | None = None) -> None:
    """Rows per N: samples of f_S1, samples of f_S2 (same seeds), nearest S1 training images; samples
    that failed framed in red."""
    import torch
    from matplotlib.patches import Rectangle

    from gahb.report.figures import pyplot, save_figure
    from gahb.sampling.grid import make_grid

    plt = pyplot()
    ns = sorted(per_n_samples)
    fig, axes = plt.subplots(len(ns), 1, figsize=(1.0 * count + 1.5, 3.2 * len(ns)), squeeze=False)
    for ax, n in zip(axes[:, 0], ns):
        s1, s2 = per_n_samples[n]["s1"][:count], per_n_samples[n]["s2"][:count]
        near = per_n_nearest[n][:count]
        grid = make_grid(torch.cat([s1, s2, near]).clamp(0, 1), nrow=count)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        h, w = s1.shape[-2] + 2, s1.shape[-1] + 2
        ax.set_yticks([h / 2 + 1, 1.5 * h + 1, 2.5 * h + 1])
        ax.set_yticklabels(["f_S1 sample", "f_S2 sample", "nearest in S1"], fontsize=8)
        status = per_n_status.get(n, {})
        for row, sub in enumerate(("s1", "s2")):
            for k, st in enumerate(status.get(sub, [])[:count]):
                if st != "converged":
                    ax.add_patch(Rectangle((k * w + 0.5, row * h + 0.5), w, h, fill=False, edgecolor="red", lw=1.5))
        ax.set_title((titles or {}).get(n, f"N = {n}"), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _empirical_figure(per_n: dict, path: Path) -> None:
    from gahb.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    cmap = plt.get_cmap("viridis")
    ns = sorted(per_n)
    for i, n in enumerate(ns):
        color = cmap(i / max(1, len(ns) - 1))
        for ax, which in zip(axes, ("train", "test")):
            d = per_n[n]["subsets"]["s1"]["distance_to_empirical"][which]
            ax.plot(d["sigma"], [max(v, 1e-12) for v in d["distance"]], marker="o", ms=3, color=color,
                    label=f"N = {n}")
    for ax, which in zip(axes, ("train", "test")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sigma")
        ax.set_title(f"||f_net - f_emp||^2 / d on {which} images", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("distance to the empirical denoiser")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
