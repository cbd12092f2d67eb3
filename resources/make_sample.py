"""Recreate resources/sample.png (a procedural landscape with a red ball to remove) and its mask.

    python resources/make_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 768, 512
HERE = Path(__file__).resolve().parent


def landscape(seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, H)[:, None]
    x = np.linspace(0, 1, W)[None, :]
    sky = np.stack([0.45 + 0.35 * y, 0.62 + 0.25 * y, 0.92 - 0.1 * y], -1) * np.ones((H, W, 1))
    sun = np.exp(-(((x - 0.78) ** 2) + ((y - 0.22) ** 2) * 1.2) / 0.004)[..., None]
    img = sky + sun * np.array([1.0, 0.85, 0.5]) * 0.8
    # two ranges of hills
    for level, color, amp, freq in ((0.55, (0.36, 0.5, 0.42), 0.08, 3.0), (0.68, (0.25, 0.45, 0.2), 0.06, 5.0)):
        phase = rng.uniform(0, 6.28, 3)
        ridge = level + amp * (np.sin(freq * 6.28 * x + phase[0]) * 0.6 + np.sin(2.3 * freq * 6.28 * x + phase[1]) * 0.3
                               + np.sin(5.1 * freq * 6.28 * x + phase[2]) * 0.1)
        m = (y > ridge)[..., None]
        shade = (0.85 + 0.15 * np.clip((y - ridge) * 6, 0, 1))[..., None]
        img = np.where(m, np.array(color) * shade, img)
    # meadow texture
    grass = rng.normal(0, 0.035, (H, W, 1)) * (y > 0.7)[..., None]
    img = np.clip(img + grass, 0, 1)
    return Image.fromarray((img * 255).astype(np.uint8), "RGB")


def main() -> None:
    im = landscape()
    d = ImageDraw.Draw(im)
    cx, cy, r = 300, 400, 46
    for i in range(r, 0, -1):  # a shaded red ball on the meadow
        t = i / r
        d.ellipse((cx - i - (r - i) * 0.3, cy - i - (r - i) * 0.3, cx + i - (r - i) * 0.3, cy + i - (r - i) * 0.3),
                  fill=(int(255 - 110 * t), int(110 * (1 - t)), int(100 * (1 - t))))
    d.ellipse((cx - 40, cy + r - 6, cx + 50, cy + r + 8), fill=(40, 70, 30))
    im = im.filter(ImageFilter.SMOOTH)
    im.save(HERE / "sample.png")
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).ellipse((cx - r - 14, cy - r - 14, cx + r + 14, cy + r + 16), fill=255)
    mask.save(HERE / "sample_mask.png")


if __name__ == "__main__":
    main()
