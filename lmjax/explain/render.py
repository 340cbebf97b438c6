"""Pictures of explanations: a grid PNG (each image, its heatmap overlay, the predicted class),
attention heatmaps, and text coloured by token attribution as HTML."""

from __future__ import annotations

import html
import io

import numpy as np


def _figure(rows: int, cols: int, figsize):
    """A Figure of its own and its axes (rows x cols): pyplot's global state is left alone, so
    a notebook keeps its inline plots."""
    from matplotlib.figure import Figure  # lazy: plotting is an optional extra

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def heat(attribution: np.ndarray) -> np.ndarray:
    """(H, W[, C]) attribution -> (H, W) in [0, 1]: |a| summed over channels, over its max."""
    a = np.abs(np.asarray(attribution, np.float32))
    a = a.sum(-1) if a.ndim == 3 else a
    top = a.max()
    return a / top if top > 0 else a


def image_grid(images: np.ndarray, maps: np.ndarray, titles: list[str], method: str,
               per_row: int = 8) -> bytes:
    """PNG bytes: for each example its image above the heatmap laid over it, titled."""
    n = len(images)
    cols = min(per_row, n)
    rows = -(-n // cols)
    fig, axes = _figure(2 * rows, cols, (1.6 * cols, 3.3 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        img = np.asarray(images[i]).squeeze(-1) if images[i].shape[-1] == 1 else images[i]
        axes[2 * r, c].imshow(img, cmap="gray")
        axes[2 * r, c].set_title(titles[i], fontsize=7)
        axes[2 * r + 1, c].imshow(img, cmap="gray")
        axes[2 * r + 1, c].imshow(heat(maps[i]), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    fig.suptitle(method, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def attention_grid(maps: np.ndarray, tokens: list[str], title: str) -> bytes:
    """PNG bytes of (layers, heads, T, T) attention maps: one heatmap per layer and head."""
    layers, heads = maps.shape[:2]
    fig, axes = _figure(layers, heads, (2.2 * heads, 2.2 * layers))
    for layer in range(layers):
        for h in range(heads):
            ax = axes[layer, h]
            ax.imshow(maps[layer, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer} head {h}", fontsize=7)
            ax.set_xticks([]), ax.set_yticks([])
    if len(tokens) <= 24:
        for ax in axes[-1]:
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=5)
        for ax in axes[:, 0]:
            ax.set_yticks(range(len(tokens)), tokens, fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def png_array(png: bytes) -> np.ndarray:
    """(H, W, 3) uint8 of a PNG, for TensorBoard."""
    import matplotlib.image  # lazy: as above (reading a PNG touches no pyplot state)

    return (matplotlib.image.imread(io.BytesIO(png))[..., :3] * 255).astype(np.uint8)


def text_html(tokens: list[str], scores: np.ndarray, title: str = "") -> str:
    """One passage as HTML, each token's background red (for) or blue (against) the class,
    its strength the |attribution| over the passage's largest."""
    scores = np.asarray(scores, np.float32)
    top = float(np.abs(scores).max()) or 1.0
    spans = []
    for token, s in zip(tokens, scores):
        a = min(abs(float(s)) / top, 1.0)
        rgb = "220,40,40" if s >= 0 else "40,80,220"
        spans.append(f'<span title="{s:+.4g}" style="background: rgba({rgb},{a:.2f})">'
                     f"{html.escape(token)}</span>")
    head = f"<p><b>{html.escape(title)}</b></p>" if title else ""
    return f'{head}<p style="line-height: 1.8">{" ".join(spans)}</p>\n'


def text_png(passages: list[tuple[list[str], np.ndarray, str]], width: int = 90) -> bytes:
    """PNG bytes of coloured passages (the picture of text_html, for TensorBoard and docs):
    each (tokens, scores, title), tokens wrapped at `width` characters in a monospace font."""
    lines = []  # (row, column, token, score) or a title
    row = 0
    for tokens, scores, title in passages:
        lines.append((row, 0, title, None))
        row, col = row + 1, 0
        top = float(np.abs(np.asarray(scores, np.float32)).max()) or 1.0
        for token, s in zip(tokens, scores):
            if col and col + len(token) > width:
                row, col = row + 1, 0
            lines.append((row, col, token, float(s) / top))
            col += len(token) + 1
        row += 2
    fig = _figure(1, 1, (0.085 * width, 0.22 * row + 0.3))[0]
    ax = fig.axes[0]
    ax.axis("off")
    ax.set_xlim(0, width), ax.set_ylim(row, -0.5)
    for r, c, token, s in lines:
        if s is None:
            ax.text(c, r, token, fontsize=8, fontweight="bold", va="center")
            continue
        rgb = (0.86, 0.16, 0.16) if s >= 0 else (0.16, 0.31, 0.86)
        ax.text(c, r, token, family="monospace", fontsize=8, va="center",
                bbox=dict(boxstyle="square,pad=0.1", lw=0, fc=(*rgb, min(abs(s), 1.0))))
    return _png(fig)


def rollout_grid(rollouts: list[np.ndarray], tokens: list[list[str]], titles: list[str],
                 title: str, per_row: int = 4) -> bytes:
    """PNG bytes: each example's (T, T) attention rollout as a heatmap (rows: queries)."""
    n = len(rollouts)
    cols = min(per_row, n)
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols, (3.2 * cols, 3.3 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for i, (r, toks, t) in enumerate(zip(rollouts, tokens, titles)):
        ax = axes.flat[i]
        ax.axis("on")
        ax.imshow(r, cmap="viridis", vmin=0)
        ax.set_title(t, fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
        if len(toks) <= 24:
            ax.set_xticks(range(len(toks)), toks, rotation=90, fontsize=5)
            ax.set_yticks(range(len(toks)), toks, fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)
