"""Rebuild the small bundled data set in data/ from a COCO-layout folder (e.g. coco128) and the style paintings.

    python data/make_sample.py --src /path/to/coco128 [--styles /path/to/styles] [--out data]

Choices (kept here so the result is reproducible and the reasons are on record):
- Images under a NoDerivs licence (Flickr CC BY-ND / BY-NC-ND) are never used: we downscale, i.e. adapt.
- The 4 preview photos are the lowest-id images under the most permissive licences (CC BY, CC BY-SA,
  no known copyright restrictions), because previews get copied into reports and model cards.
- The sample is the next SAMPLE_SIZE images (by id) under any remaining licence; data/README.md counts them.
- Sample images: shorter side 288 px (room for random 256 crops), JPEG quality 88. Previews: shorter side
  256, quality 90. Paintings: longer side 512, quality 90. Pillow, bicubic (antialiased), no EXIF kept.
- The annotation file keeps `info`, `categories`, the referenced `licenses` and the kept `images` (sizes
  updated) and has an EMPTY `annotations` list: style transfer reads only the image list, and an empty
  list is honest where rescaled crowd RLE masks would not be. pycocotools loads it as usual.
Only Pillow is needed; the script does not import fststyle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageOps

SAMPLE_SIZE = 40
PREVIEW_COUNT = 4
SAMPLE_SHORT_SIDE = 288
PREVIEW_SHORT_SIDE = 256
STYLE_LONG_SIDE = 512
STYLES = ("starry_night", "the_scream", "udnie")  # public domain; never mosaic or candy
NO_DERIVATIVES = {"Attribution-NonCommercial-NoDerivs License", "Attribution-NoDerivs License"}
PERMISSIVE = {"Attribution License", "Attribution-ShareAlike License", "No known copyright restrictions"}


def resized(path: Path, short_side: int | None = None, long_side: int | None = None) -> Image.Image:
    """Open `path` upright as RGB and scale it so the shorter (or longer) side has the given length."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    scale = short_side / min(img.size) if short_side else long_side / max(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="COCO-layout folder with train2017/ and annotations/")
    parser.add_argument("--styles", type=Path, help="folder with the paintings (default: SRC/../styles)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="default: data/")
    args = parser.parse_args()
    styles_dir = args.styles or args.src.parent / "styles"

    coco = json.loads((args.src / "annotations" / "instances_train2017.json").read_text())
    licence_name = {lic["id"]: lic["name"] for lic in coco["licenses"]}
    usable = [img for img in sorted(coco["images"], key=lambda i: i["id"])
              if licence_name[img["license"]] not in NO_DERIVATIVES]
    previews = [img for img in usable if licence_name[img["license"]] in PERMISSIVE][:PREVIEW_COUNT]
    sample = [img for img in usable if img not in previews][:SAMPLE_SIZE]

    image_dir = args.out / "coco_sample" / "train2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in image_dir.glob("*.jpg"):
        stale.unlink()
    kept = []
    for info in sample:
        img = resized(args.src / "train2017" / info["file_name"], short_side=SAMPLE_SHORT_SIDE)
        img.save(image_dir / info["file_name"], quality=88, optimize=True)
        kept.append({**info, "width": img.width, "height": img.height})
    used_licences = {info["license"] for info in kept}
    annotations = {
        "info": coco["info"],
        "licenses": [lic for lic in coco["licenses"] if lic["id"] in used_licences],
        "categories": coco["categories"],
        "images": kept,
        "annotations": [],
    }
    ann_path = args.out / "coco_sample" / "annotations" / "instances_train2017.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(annotations, indent=1) + "\n")

    preview_dir = args.out / "preview"
    preview_dir.mkdir(parents=True, exist_ok=True)
    print("| file | COCO id | Flickr URL | licence |\n|---|---|---|---|")
    for info in previews:
        resized(args.src / "train2017" / info["file_name"], short_side=PREVIEW_SHORT_SIDE).save(
            preview_dir / info["file_name"], quality=90, optimize=True)
        print(f"| preview/{info['file_name']} | {info['id']} | {info['flickr_url']} | "
              f"{licence_name[info['license']]} |")

    style_dir = args.out / "styles"
    style_dir.mkdir(parents=True, exist_ok=True)
    for name in STYLES:
        resized(styles_dir / f"{name}.jpg", long_side=STYLE_LONG_SIDE).save(
            style_dir / f"{name}.jpg", quality=90, optimize=True)

    counts = {}
    for info in kept:
        counts[licence_name[info["license"]]] = counts.get(licence_name[info["license"]], 0) + 1
    print(f"\nsample: {len(kept)} images; licences: {counts}")


if __name__ == "__main__":
    main()
