"""A web demo for any `VQGANTransformerPipeline`, on Gradio (an optional extra: `pip install hf_vqgan[demo]`).

    hf-vqgan demo --model outputs/pipeline                         # the command line

    from hf_vqgan.demo import build_demo, launch_demo              # the same app, from Python
    launch_demo(build_demo(VQGANTransformerPipeline.from_pretrained("user/vqgan-digits")))

    hf-vqgan demo --model user/vqgan-digits --write-space my_space  # app.py, requirements.txt, README.md of a Space

Importing `hf_vqgan` or this package does not import Gradio; `build_demo` and `launch_demo` do, on first use. The
tab logic (`actions.VQGANDemo`) and the upload checks (`uploads`) need no Gradio.
"""

from __future__ import annotations

from .space import write_space

INSTALL_HINT = "The demo needs Gradio, an optional extra: pip install 'hf_vqgan[demo]'"

__all__ = ["build_demo", "launch_demo", "require_gradio", "write_space"]


def require_gradio() -> None:
    """Raise `ImportError` saying how to install Gradio when it is missing."""
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error


def __getattr__(name: str):
    # `build_demo` and `launch_demo` live in `ui`, which imports Gradio: load it only when they are asked for.
    if name in ("build_demo", "launch_demo"):
        require_gradio()
        from . import ui

        return getattr(ui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
