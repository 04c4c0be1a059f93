"""PNG plots of a learned workload: prompt and output length histograms, and the arrival rate over time.
Drawing only (matplotlib, Agg backend); nothing is computed here that the model does not hold."""

from __future__ import annotations

from pathlib import Path

from tuner.errors import OutputPathError
from tuner.workload_model import LengthDistribution, WorkloadModel


def _bars(ax, dist: LengthDistribution, title: str) -> None:  # type: ignore[no-untyped-def]
    total = dist.total_weight or 1.0
    for b in dist.bins:
        width = max(b.high_tokens - b.low_tokens, 1.0)
        density = b.weight / total / width
        ax.bar(b.low_tokens, density, width=width, align="edge", color="tab:blue", edgecolor="white")
    ax.axvline(dist.mean_tokens, color="tab:red", linestyle="--", label=f"mean {dist.mean_tokens:.0f}")
    ax.set_title(f"{title} ({dist.origin})")
    ax.set_xlabel("tokens")
    ax.set_ylabel("share of requests per token")
    ax.legend()


def write_plots(model: WorkloadModel, name: str, folder: Path) -> list[Path]:
    """lengths.png and rate.png in `folder` (created); OutputPathError when it cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create {folder}: {exc.strerror}") from None
    paths = [folder / "lengths.png", folder / "rate.png"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _bars(axes[0], model.prompt_tokens, f"{name}: prompt lengths")
    _bars(axes[1], model.output_tokens, f"{name}: output lengths")
    fig.tight_layout()
    try:
        fig.savefig(paths[0])
    finally:
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(11, 3.5))
    t = [i * model.step_s for i in range(len(model.rate_profile_rps))]
    ax.step(t, model.rate_profile_rps, where="post", label="requests/s")
    ax.axhline(model.rate_rps, color="tab:red", linestyle="--", label=f"mean {model.rate_rps:.2f} req/s")
    ax.set_xlabel(f"seconds since window start (step {model.step_s:g}s)")
    ax.set_ylabel("finished requests / s")
    ax.set_title(f"{name}: arrival rate (burstiness {model.burstiness:.2f}; Poisson = 1)")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(paths[1])
    finally:
        plt.close(fig)
    return paths
