"""Draw a scene graph as an RGB image with PIL, byte-for-byte the same every time.

Shapes are flat fills with a darker outline on white; numbers are centred on their shape in black
or white, whichever contrasts more. Charts get a title, a y axis with ticks and light grid lines,
the value above each bar and the label below it. Text uses Pillow's built-in scalable font
(`ImageFont.load_default(size=...)`, Pillow ≥ 10.1 with FreeType): it ships inside Pillow, so
rendering needs no font files and no network. Pixels change only with this module: when they do,
bump `RENDERER_VERSION` in `pipelines/sources/synthetic.py` so cached fingerprints change too.
"""

from functools import lru_cache
from io import BytesIO

from PIL import Image, ImageDraw, ImageFont

from pipelines.world.scenes import COLOURS, DEFAULT_SIZE, Chart, Scene, Shape

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID = (225, 225, 225)


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, scene.width)
    if scene.chart is not None:
        _draw_chart(draw, scene.chart, scene.width)
    return image


def render_png(scene: Scene) -> bytes:
    buffer = BytesIO()
    render(scene).save(buffer, format="PNG")  # Pillow writes no timestamp: same image, same bytes
    return buffer.getvalue()


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, canvas: int) -> None:
    fill = COLOURS[shape.colour]
    outline = tuple(channel * 6 // 10 for channel in fill)
    line_width = max(1, canvas // 150)
    left, top, right, bottom = shape.bbox
    box = (left, top, right - 1, bottom - 1)  # PIL boxes include their last pixel
    if shape.kind == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=line_width)
    elif shape.kind == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=line_width)
    else:
        points = [((left + right) / 2, top), (right - 1, bottom - 1), (left, bottom - 1)]
        draw.polygon(points, fill=fill, outline=outline, width=line_width)
    if shape.number is None:
        return
    side = right - left
    if shape.kind == "triangle":
        # The widest room inside a triangle is low down: centre the number at 2/3 of its height.
        centre, font_px = ((left + right) / 2, top + side * 2 / 3), round(side * 0.38)
    else:
        centre, font_px = ((left + right) / 2, (top + bottom) / 2), round(side * 0.5)
    _text(draw, centre, str(shape.number), _font(font_px), _contrasting_ink(fill))


def _draw_chart(draw: ImageDraw.ImageDraw, chart: Chart, canvas: int) -> None:
    scale = canvas / DEFAULT_SIZE
    left, top, right, bottom = chart.plot_bbox
    small = _font(round(10 * scale))
    _text(draw, (canvas / 2, 12 * scale), chart.title, _font(round(13 * scale)), INK)
    for tick in chart.y_ticks:
        y = bottom - tick * (bottom - top) / chart.y_max
        draw.line((left, y, right, y), fill=GRID)
        draw.line((left - round(3 * scale), y, left, y), fill=INK)
        _text(draw, (left - round(5 * scale), y), str(tick), small, INK, align="right")
    slot = (right - left) / len(chart.bars)
    for bar in chart.bars:
        bar_left, bar_top, bar_right, bar_bottom = bar.bbox
        if bar_top < bar_bottom:
            draw.rectangle((bar_left, bar_top, bar_right - 1, bar_bottom - 1), fill=COLOURS[bar.colour])
        centre_x = (bar_left + bar_right) / 2
        _text(draw, (centre_x, bar_top - 7 * scale), str(bar.value), small, INK)
        label_font = _fitting_font(bar.label, slot - 2, round(10 * scale))
        _text(draw, (centre_x, bottom + 10 * scale), bar.label, label_font, INK)
    draw.line((left, top, left, bottom), fill=INK)
    draw.line((left, bottom, right, bottom), fill=INK)


@lru_cache(maxsize=64)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Cached because loading the built-in font costs more than drawing a whole scene.
    return ImageFont.load_default(size=max(6, size_px))


def _fitting_font(text: str, max_width: float, size_px: int):
    """The largest font ≤ `size_px` (down to 7 px) in which `text` fits `max_width`."""
    while size_px > 7 and _font(size_px).getlength(text) > max_width:
        size_px -= 1
    return _font(size_px)


def _text(draw: ImageDraw.ImageDraw, anchor_xy: tuple[float, float], text: str, font, fill,
          *, align: str = "centre") -> None:
    """Draw `text` centred on `anchor_xy` (or right-aligned to it), measured from its ink box.

    Positioned from `textbbox` rather than PIL's `anchor=` so it also works with the bitmap font
    Pillow falls back to when built without FreeType.
    """
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    x = anchor_xy[0] - (x1 if align == "right" else (x0 + x1) / 2)
    y = anchor_xy[1] - (y0 + y1) / 2
    draw.text((round(x), round(y)), text, fill=fill, font=font)


def _contrasting_ink(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return INK if luminance > 140 else (255, 255, 255)
