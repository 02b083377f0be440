"""The google/ddpm-ema-celebahq-256 model card's snippet, with ``from ddpm import`` in place of ``from diffusers``.

    python examples/model_card.py                       # the real model: a 455 MB download, then 1000 UNet steps
    DDPM_MODEL=./my-model python examples/model_card.py # any other Hub id or pipeline folder

Below the model id line, the code is the model card's, unchanged. It writes ddpm_generated_image.png in the current
folder.
"""

import os

# !pip install diffusers
from ddpm import DDPMPipeline, DDIMPipeline, PNDMPipeline

model_id = os.environ.get("DDPM_MODEL", "google/ddpm-ema-celebahq-256")

# load model and scheduler
ddpm = DDPMPipeline.from_pretrained(model_id)  # you can replace DDPMPipeline with DDIMPipeline or PNDMPipeline for faster inference

# run pipeline in inference (sample random noise and denoise)
image = ddpm().images[0]

# save image
image.save("ddpm_generated_image.png")
