"""A plot as a PNG without matplotlib (standard library only): log-log lines in panels, no text.

Used by ``python -m bench gpu`` where matplotlib is not importable, so that ``results.png``
always exists; ``results.md`` then says which colour is which series.
"""
from __future__ import annotations

import math
import struct
import zlib

PANEL_WIDTH, HEIGHT, MARGIN = 360, 300, 28
GRID, AXES, WHITE = (225, 225, 225), (90, 90, 90), (255, 255, 255)


def encode(width, height, rgb):
    """PNG bytes of an 8-bit RGB image (``rgb``: ``width * height * 3`` bytes, rows top down)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    stride = 3 * width
    raw = b"".join(b"\x00" + bytes(rgb[y * stride:(y + 1) * stride]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


class Canvas:
    """White RGB canvas with lines and squares."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.rgb = bytearray(WHITE * (width * height))

    def dot(self, x, y, colour):
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.rgb[i:i + 3] = bytes(colour)

    def square(self, x, y, half, colour):
        for dy in range(-half, half + 1):
            for dx in range(-half, half + 1):
                self.dot(x + dx, y + dy, colour)

    def line(self, x0, y0, x1, y1, colour, width=1, dash=0):
        """A line ``width`` pixels thick; ``dash`` > 0 draws ``dash`` pixels on, ``dash`` off."""
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for k in range(steps + 1):
            if dash and (k // dash) % 2:
                continue
            x = round(x0 + (x1 - x0) * k / steps)
            y = round(y0 + (y1 - y0) * k / steps)
            for w in range(width):
                self.dot(x + (w if abs(y1 - y0) > abs(x1 - x0) else 0),
                         y + (0 if abs(y1 - y0) > abs(x1 - x0) else w), colour)

    def png(self):
        return encode(self.width, self.height, self.rgb)


def _rgb(colour):
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))


def _range(values):
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def plot(panels):
    """PNG bytes: one panel per entry of ``panels`` (``{title: [(name, "#rrggbb", measured,
    bound)]}``, points ``(frames, frames/s)``), x log2 and y log10 with a grid line at every
    power of 2 and of 10, measured lines solid with square markers, bounds dashed."""
    panels = panels or {"": []}
    canvas = Canvas(PANEL_WIDTH * len(panels), HEIGHT)
    for p, lines in enumerate(panels.values()):
        left, right = p * PANEL_WIDTH + MARGIN, (p + 1) * PANEL_WIDTH - MARGIN // 2
        top, bottom = MARGIN // 2, HEIGHT - MARGIN
        points = [pt for _, _, measured, bound in lines for pt in measured + bound
                  if pt[0] > 0 and pt[1] and pt[1] > 0]
        if points:
            xr = _range([math.log2(x) for x, _ in points])
            yr = _range([math.log10(y) for _, y in points])

            def at(x, y, xr=xr, yr=yr, left=left, right=right, top=top, bottom=bottom):
                u = (math.log2(x) - xr[0]) / (xr[1] - xr[0])
                v = (math.log10(y) - yr[0]) / (yr[1] - yr[0])
                return round(left + u * (right - left)), round(bottom - v * (bottom - top))

            for k in range(math.ceil(xr[0]), math.floor(xr[1]) + 1):
                x, _ = at(2.0 ** k, 10.0 ** yr[0])
                canvas.line(x, top, x, bottom, GRID)
            for k in range(math.ceil(yr[0]), math.floor(yr[1]) + 1):
                _, y = at(2.0 ** xr[0], 10.0 ** k)
                canvas.line(left, y, right, y, GRID)
            for _, colour, measured, bound in lines:
                rgb = _rgb(colour)
                for series, dash in ((bound, 6), (measured, 0)):
                    xy = [at(x, y) for x, y in series if x > 0 and y and y > 0]
                    for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
                        canvas.line(x0, y0, x1, y1, rgb, width=2, dash=dash)
                    if dash and len(xy) == 1:             # one size: a dashed tick
                        x, y = xy[0]
                        canvas.line(x - 18, y, x + 18, y, rgb, width=2, dash=dash)
                    if not dash:
                        for x, y in xy:
                            canvas.square(x, y, 2, rgb)
        canvas.line(left, bottom, right, bottom, AXES)
        canvas.line(left, top, left, bottom, AXES)
    return canvas.png()
