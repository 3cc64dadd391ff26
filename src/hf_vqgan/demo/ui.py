"""The Gradio page: one tab per thing the loaded pipeline can do, each calling `VQGANDemo`.

    demo = build_demo(pipe)                          # a gr.Blocks, queued
    launch_demo(demo, host="127.0.0.1", port=7860)   # or demo.launch(...) in a Space

Importing this module imports Gradio (`pip install hf_vqgan[demo]`).
"""

from __future__ import annotations

import functools
import json
import logging

import gradio as gr

from .actions import SampleResult, VQGANDemo
from .uploads import UploadError, read_upload

logger = logging.getLogger(__name__)

# Tiny images (32x32 digits) stay crisp when the page enlarges them.
CSS = ".pixelated img, img.pixelated { image-rendering: pixelated; }"
MAX_FILE_SIZE = "20mb"


def friendly_errors(fn):
    """Turn what a person can fix (bad uploads, bad settings) into a message in the page; anything else is logged with
    its traceback on the server and shown as one line, never as a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (UploadError, ValueError, TypeError) as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception as error:
            logger.exception("demo request failed")
            raise gr.Error(f"The request failed ({type(error).__name__}); the app is still running.") from None

    return wrapper


def _progress_reporter(progress: gr.Progress):
    return lambda done, total: progress((done, total), desc="Sampling tokens")


# ------------------------------------------------------------------------------------------------- controls
def _sampling_controls(demo: VQGANDemo, tab: str) -> list[gr.components.Component]:
    """Class, number of images, guidance, temperature, top-k, top-p and seed, in the order `_sample_kwargs` reads;
    the class picker's element id is `{tab}-class`."""
    choices = demo.class_choices()
    class_picker = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, label="Class",
                               visible=bool(choices), elem_id=f"{tab}-class")  # fmt: skip
    num_images = gr.Slider(1, demo.max_images, value=4, step=1, label="Number of images")
    guidance_help = "Classifier-free guidance; 1 is off (needs a prior trained with class dropout)."
    guidance = gr.Slider(1.0, 8.0, value=1.0, step=0.1, label="Guidance scale", visible=bool(choices),
                         info=guidance_help)  # fmt: skip
    with gr.Accordion("Sampling", open=False):
        temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
        top_k = gr.Slider(0, demo.usage.codebook_size, value=0, step=1, label="Top-k (0: off)")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p (1: off)")
    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
    return [class_picker, num_images, guidance, temperature, top_k, top_p, seed]


def _sample_kwargs(class_label, num_images, guidance, temperature, top_k, top_p, seed) -> dict:
    return dict(
        class_label=None if class_label is None else int(class_label), num_images=int(num_images),
        seed=int(seed or 0), guidance_scale=guidance, temperature=temperature, top_k=int(top_k), top_p=top_p,
    )  # fmt: skip


def _gallery(label: str = "Samples") -> gr.Gallery:
    return gr.Gallery(label=label, columns=4, format="png", object_fit="contain", elem_classes=["pixelated"],
                      elem_id=label.lower().replace(" ", "-"))  # fmt: skip


def _results_column(label: str, tokens_label: str = "Tokens (JSON)") -> tuple[gr.Gallery, gr.File]:
    """The right-hand column of a sampling tab: the samples and their codes to download."""
    with gr.Column(scale=2):
        return _gallery(label), gr.File(label=tokens_label)


def _outputs(result: SampleResult):
    return result.images, result.save_tokens()


# ---------------------------------------------------------------------------------------------------- tabs
def _generate_tab(demo: VQGANDemo) -> None:
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1):
                controls = _sampling_controls(demo, "generate")
                button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            gallery, tokens = _results_column(
                "Generated", "Tokens (JSON: codes of shape (images, h, w) and the settings)"
            )

    @friendly_errors
    def generate(*values, progress=gr.Progress()):
        return _outputs(demo.generate(progress=_progress_reporter(progress), **_sample_kwargs(*values)))

    button.click(generate, inputs=controls, outputs=[gallery, tokens], api_name="generate")


def _complete_tab(demo: VQGANDemo) -> None:
    rows = demo.grid[0]
    with gr.Tab("Complete", id="complete"):
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image to complete", elem_id="complete-upload")
                keep_rows = gr.Slider(0, rows, value=rows // 2, step=1, label=f"Token rows to keep (of {rows})")
                kept = gr.Image(label="Kept region (the rest is sampled)", interactive=False, elem_id="kept-region")
                controls = _sampling_controls(demo, "complete")
                button = gr.Button("Complete", variant="primary", elem_id="complete-button")
            gallery, tokens = _results_column("Completions")

    @friendly_errors
    def preview(path, keep):
        return None if path is None else demo.kept_region(read_upload(path), int(keep))

    @friendly_errors
    def complete(path, keep, *values, progress=gr.Progress()):
        result = demo.complete(read_upload(path), int(keep), progress=_progress_reporter(progress),
                               **_sample_kwargs(*values))  # fmt: skip
        return result.preview, *_outputs(result)

    upload.change(preview, inputs=[upload, keep_rows], outputs=kept, api_name="kept_region")
    keep_rows.release(preview, inputs=[upload, keep_rows], outputs=kept, api_name=False)
    button.click(complete, inputs=[upload, keep_rows, *controls], outputs=[kept, gallery, tokens],
                 api_name="complete")  # fmt: skip


def _reconstruct_tab(demo: VQGANDemo) -> None:
    with gr.Tab("Reconstruct", id="reconstruct"):
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", elem_id="reconstruct-upload")
                button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
                summary = gr.Markdown(elem_id="reconstruct-summary")
            with gr.Column(scale=2):
                strip = gr.Image(label="Original | reconstruction | difference", elem_id="reconstruct-strip",
                                 elem_classes=["pixelated"], interactive=False, format="png")  # fmt: skip
                codes = gr.Image(label="Token grid (a colour per code id)", elem_id="reconstruct-codes",
                                 elem_classes=["pixelated"], interactive=False, format="png")  # fmt: skip

    @friendly_errors
    def reconstruct(path):
        result = demo.reconstruct(read_upload(path))
        used = ", ".join(f"{code} ×{count}" for code, count in result.codes[:24])
        more = f" and {len(result.codes) - 24} more" if len(result.codes) > 24 else ""
        text = (
            f"**PSNR** {result.psnr:.2f} dB  \n**Tokens** {result.indices.shape[1]}x{result.indices.shape[2]}, "
            f"**codes used** {len(result.codes)} of {demo.usage.codebook_size}  \n{used}{more}"
        )
        return result.strip, result.code_map, text

    button.click(reconstruct, inputs=upload, outputs=[strip, codes, summary], api_name="reconstruct")


def _condition_tab(demo: VQGANDemo) -> None:
    kind = demo.condition_type
    with gr.Tab("Condition", id="condition"):
        with gr.Row():
            with gr.Column(scale=1):
                hint = {"edges": "a photo: the pipeline draws its edges", "lowres": "a photo: the pipeline shrinks it",
                        "depth": "a depth map (16-bit PNG or grayscale)",
                        "segmentation": "a label map (grayscale or palette PNG), or draw one below"}[kind]  # fmt: skip
                upload = gr.File(label=f"Condition: {hint}", elem_id="condition-upload")
                sketch = None
                if kind == "segmentation":
                    colours = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in demo.segmentation_colors()]
                    brush = gr.Brush(colors=colours, default_color=colours[0], color_mode="fixed")
                    sketch = gr.ImageEditor(type="pil", brush=brush, label="Draw labels (colour i is label i)",
                                            canvas_size=(256, 256))  # fmt: skip
                controls = _sampling_controls(demo, "condition")
                button = gr.Button("Sample", variant="primary", elem_id="condition-button")
            with gr.Column(scale=2):
                derived = gr.Image(label=f"The {kind} map the pipeline derived", elem_id="condition-map",
                                   elem_classes=["pixelated"], interactive=False, format="png")  # fmt: skip
                gallery = _gallery("Conditioned")
                tokens = gr.File(label="Tokens (JSON)")

    @friendly_errors
    def sample(path, drawing, *values, progress=gr.Progress()):
        if path is not None:
            source = read_upload(path, what="condition image")
        elif drawing is not None and drawing.get("composite") is not None:
            source = drawing["composite"]
        else:
            raise UploadError("Upload a condition image" + (" or draw one." if sketch is not None else "."))
        result = demo.condition(source, progress=_progress_reporter(progress), **_sample_kwargs(*values))
        return result.preview, *_outputs(result)

    inputs = [upload, sketch if sketch is not None else gr.State(None), *controls]
    button.click(sample, inputs=inputs, outputs=[derived, gallery, tokens], api_name="condition")


def _about_tab(demo: VQGANDemo) -> None:
    with gr.Tab("About", id="about"):
        gr.Markdown(demo.model_card(), elem_id="model-card")
        with gr.Accordion("Config", open=False):
            gr.Code(json.dumps(demo.config(), indent=2), language="json", elem_id="model-config")
        usage = gr.Markdown(elem_id="codebook-usage")
        refresh = gr.Button("Codebook usage so far", elem_id="usage-button")

    def usage_text() -> str:
        report = demo.usage_report()
        if not report["num_tokens"]:
            return "No codes yet: generate or reconstruct something, then look again."
        return (
            f"**Codebook usage** over the {report['num_tokens']:,} codes this app has produced since it started: "
            f"{report['usage']:.1%} of {report['codebook_size']} codes used, perplexity {report['perplexity']:.1f}."
        )

    refresh.click(usage_text, outputs=usage, api_name="codebook_usage")


def build_demo(pipe, title: str | None = None, max_images: int = 16, concurrency_limit: int = 2,
               max_queue_size: int = 64) -> gr.Blocks:  # fmt: skip
    """
    The demo app of a `VQGANTransformerPipeline`, queued with at most `concurrency_limit` requests running at once.

    Tabs: Generate and Complete (priors without image conditions), Reconstruct, Condition (image-conditional priors)
    and About. Launch it with `launch_demo` (or `.launch()`).
    """
    demo = VQGANDemo(pipe, max_images=max_images)
    pipe.set_progress_bar_config(disable=True)  # the page shows progress; the server log stays quiet
    width, height = demo.image_size
    kind = f"{demo.condition_type}-conditional" if demo.needs_condition else (
        "class-conditional" if demo.num_classes else "unconditional")  # fmt: skip
    title = title or "VQGAN demo"
    with gr.Blocks(title=title) as blocks:
        gr.Markdown(f"# {title}\n{kind} · {width}x{height} pixels · {demo.grid[0]}x{demo.grid[1]} tokens · "
                    f"{demo.usage.codebook_size} codes")  # fmt: skip
        with gr.Tabs():
            if not demo.needs_condition:
                _generate_tab(demo)
                _complete_tab(demo)
            _reconstruct_tab(demo)
            if demo.needs_condition:
                _condition_tab(demo)
            _about_tab(demo)
    return blocks.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)


def launch_demo(blocks: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, **kwargs):
    """`blocks.launch` with the demo's page style and upload limit; `kwargs` go to `launch`."""
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    return blocks.launch(server_name=host, server_port=port, css=CSS, show_error=True, **kwargs)
