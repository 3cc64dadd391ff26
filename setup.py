from setuptools import find_packages, setup

# Upper bounds on torch/torchvision match what this project's CI can install; raise them together.
TORCH = "torch>=2.1,<=2.14.1"
TORCHVISION = "torchvision>=0.16,<=0.29.1"

install_requires = [
    TORCH,
    "diffusers>=0.30",
    "transformers>=4.46",
    "huggingface_hub>=0.25",
    "safetensors>=0.4",
    "numpy>=1.24",
    "pillow>=9.0",
]

extras = {
    "training": [
        "accelerate>=0.34",
        "datasets>=2.20",
        "lpips>=0.1.4",
        TORCHVISION,
        "scikit-learn>=1.3",
        "scikit-image>=0.21",
        "tensorboard>=2.14",
        "pyyaml>=6.0",
        "tqdm>=4.64",
    ],
}
# The web demo (`hf-vqgan demo`); importing hf_vqgan never imports it.
extras["demo"] = ["gradio>=5.0", "gradio_client>=1.0"]
# playwright drives the system Chromium in the browser tests (`pytest -m browser`); `.ci/run` installs Chromium.
extras["test"] = extras["training"] + extras["demo"] + ["pytest>=7.4", "playwright>=1.40"]
extras["dev"] = extras["test"] + ["ruff>=0.5"]

setup(
    name="hf_vqgan",
    version="0.1.0.dev0",
    description="VQGAN (taming transformers) as a first-class citizen of the Hugging Face ecosystem",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # model_cards/ ships inside the package as `hf_vqgan.model_cards`, so installed copies can render cards.
    package_dir={"": "src", "hf_vqgan.model_cards": "model_cards"},
    packages=find_packages("src") + ["hf_vqgan.model_cards"],
    package_data={"hf_vqgan.model_cards": ["*.md"]},
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["hf-vqgan=hf_vqgan.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
