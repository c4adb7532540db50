"""Per-image side information from the dataset, for the components that ask for it.

A component whose `needs_masks` is true (sd_inpaint with mask=dataset, the inpainting
defenses with mask.region=dataset) gets each clean image's dataset mask as `masks=`; one
whose `needs_attributes` is true (the GAN attribute editors and the defenses that attack
them) gets each image's row of `dataset.attributes` as `attributes=` (a list of
{name: 0 or 1}); one whose `needs_audio` is true (the talking-head generator, Silencer-I)
gets each image's clip of `dataset.audio` as `audio=` (benchmark.data.audio). The side
input's content joins that item's cache key. `SideInputs.check` runs when a job starts,
before any model: every image must have what a component needs.
"""

import json
from dataclasses import dataclass

from benchmark.errors import BenchError
from benchmark.schema import STAGE_COMPONENT


@dataclass
class SideInputs:
    masks: bool = False
    attributes: bool = False
    audio: bool = False

    @classmethod
    def check(cls, dataset, components: dict) -> "SideInputs":
        """Which side inputs the job's components take; each image must have them."""
        def users(flag: str) -> list[str]:
            return [STAGE_COMPONENT[stage] for stage, c in components.items() if getattr(c, flag)]

        masks, attributes, audio = (users("needs_masks"), users("needs_attributes"),
                                    users("needs_audio"))
        if masks:
            stage = next(s for s, c in components.items() if c.needs_masks)
            if dataset.masks is None:
                raise BenchError(
                    f"{masks[0]}.{components[stage].masks_option} needs one mask per image, but "
                    "dataset.masks is not set: add dataset.masks=/path/to/masks (the mask of "
                    "<root>/<rel>/<stem>.<ext> is <masks>/<rel>/<stem>.png or any image "
                    "extension, white = repaint)")
            dataset.check_masks()  # directory listings only
        if attributes:
            if dataset.attribute_table is None:
                raise BenchError(
                    f"{attributes[0]} edits relative to each image's attributes, but "
                    "dataset.attributes is not set: add dataset.attributes=/path/to/"
                    "list_attr_celeba.txt (CelebA format), or give the editor fixed source "
                    "attributes (generator.source={Male: 1, Young: 1})")
            dataset.attribute_table.check(dataset.paths)
        if audio:
            if dataset.audio is None:
                raise BenchError(
                    f"{audio[0]} needs each image's driving audio clip, but dataset.audio is "
                    "not set: add dataset.audio=/path/to/clip.wav (one for every image), a "
                    "folder of <stem>.wav files, or 'sample' (the synthetic clip shipped with "
                    "bench)")
            dataset.check_audio()
        return cls(bool(masks), bool(attributes), bool(audio))


def item_inputs(component, input_keys: list[str], batch) -> list[list[str]]:
    """Per item, the keys of everything its output depends on besides config and seed."""
    items = [[k] for k in input_keys]
    if component.needs_masks:
        items = [ins + [f"mask:{m}"] for ins, m in zip(items, batch.mask_keys)]
    if component.needs_attributes:
        items = [ins + ["attributes:" + json.dumps(a, sort_keys=True)]
                 for ins, a in zip(items, batch.attributes)]
    if component.needs_audio:
        items = [ins + [f"audio:{a.key}"] for ins, a in zip(items, batch.audio)]
    return items


def arguments(component, batch, indices: list[int], device) -> dict:
    """The side inputs a component's call takes, for the images at `indices`."""
    side = {}
    if component.needs_masks:
        side["masks"] = batch.masks[indices].to(device)
    if component.needs_attributes:
        side["attributes"] = [batch.attributes[i] for i in indices]
    if component.needs_audio:
        side["audio"] = [batch.audio[i] for i in indices]
    return side
