"""The google/ddpm-ema-celebahq-256 model card's snippet, with ``from ddpm import`` in place of ``from diffusers``.

    python examples/model_card.py                       # the bundled ddpm-mnist: offline, 1000 DDPM steps on a digit
    DDPM_MODEL=google/ddpm-ema-celebahq-256 python examples/model_card.py   # the card's model: a 455 MB download
    DDPM_MODEL=./my-model python examples/model_card.py # any other Hub id or pipeline folder

Below the model id line, the code is the model card's, unchanged. It writes ddpm_generated_image.png in the current
folder. It takes no arguments: ``DDPM_MODEL`` chooses the model (default: the bundled ddpm-mnist).
"""

import os
import sys

if sys.argv[1:]:  # it takes no arguments: say how to choose the model
    print(__doc__)
    sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)

# !pip install diffusers
from ddpm import DDPMPipeline, DDIMPipeline, PNDMPipeline

model_id = os.environ.get("DDPM_MODEL", "ddpm-mnist")  # the card's: "google/ddpm-ema-celebahq-256"

# load model and scheduler
ddpm = DDPMPipeline.from_pretrained(model_id)  # you can replace DDPMPipeline with DDIMPipeline or PNDMPipeline for faster inference

# run pipeline in inference (sample random noise and denoise)
image = ddpm().images[0]

# save image
image.save("ddpm_generated_image.png")
