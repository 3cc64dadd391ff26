"""The files of a Hugging Face Space that runs the demo on a pipeline repo: `app.py`, `requirements.txt`, README.md.

write_space("my_space", model="user/vqgan-digits")
# then: huggingface-cli upload user/vqgan-digits-demo my_space . --repo-type space
"""

from __future__ import annotations

import json
import os

SPACE_APP = '''"""The hf_vqgan demo of {model} (written by `hf-vqgan demo --write-space`)."""

import os

from hf_vqgan import VQGANTransformerPipeline
from hf_vqgan.demo import build_demo, launch_demo

MODEL = os.environ.get("HF_VQGAN_MODEL", {model!r})

pipe = VQGANTransformerPipeline.from_pretrained(MODEL)
demo = build_demo(pipe, title={title!r})

if __name__ == "__main__":
    launch_demo(demo, host="0.0.0.0", port=int(os.environ.get("PORT", 7860)))
'''

SPACE_REQUIREMENTS = """hf_vqgan[demo]
"""

SPACE_README = """---
title: {title_yaml}
sdk: gradio
app_file: app.py
pinned: false
models:
  - {model}
---

The hf_vqgan web demo (`hf-vqgan demo`) of `{model}`: generate, complete, reconstruct and condition, in the
browser. Set the `HF_VQGAN_MODEL` variable of the Space to serve another pipeline.
"""


def write_space(folder: str | os.PathLike, model: str, title: str | None = None) -> list[str]:
    """Write `app.py`, `requirements.txt` and `README.md` of a Space serving the demo of `model` (a Hub repo id or a
    path the Space can read) into `folder`; returns the paths written."""
    if not model:
        raise ValueError(
            "`model` must name the pipeline the Space serves (a Hub repo id such as 'user/vqgan-digits')."
        )
    title = title or "VQGAN demo"
    os.makedirs(folder, exist_ok=True)
    files = {
        "app.py": SPACE_APP.format(model=model, title=title),
        "requirements.txt": SPACE_REQUIREMENTS,
        "README.md": SPACE_README.format(model=model, title_yaml=json.dumps(title)),
    }
    paths = []
    for name, text in files.items():
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        paths.append(path)
    return paths
