"""The base of the Stable Diffusion editors: a `Generator` on the shared pipeline core.

Model loading, prompts, paired noise and batching are in
`benchmark.models.sd_pipeline.PipelineEditor` (the diffusion purifiers use them
too); see its docstring for how the noise is paired.
"""

from benchmark.generators.base import Generator
from benchmark.models.sd_pipeline import PipelineEditor


class DiffusionEditor(PipelineEditor, Generator):
    """Base of the Stable Diffusion editors: subclasses name a pipeline and call it."""
