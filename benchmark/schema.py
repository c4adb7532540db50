"""What a job makes and writes, without torch: pairs, image recipes, columns, JobResult.

`bench table` and the other readers of results import only this (and pandas), so that
reading tables never loads torch.
"""

from dataclasses import dataclass, field

PAIR_MEANINGS = {
    "fidelity": "T(x_adv) vs x: how close the transformed protected image is to the clean one",
    "edit": "G(T(x_adv)) vs G(x): high similarity = the protection failed after T",
    "protection": "G(x_adv) vs G(x): the protection itself, no transformation",
    "control": "G(T(x)) vs G(x): what T alone does to the edit",
    "invisibility": "x_adv vs x: the defense's cost in image quality",
    "subject": "G(T(x_adv)) vs x: the edit against the clean photos (Anti-DreamBooth's ISM "
               "against the subject's identity)",
}
PAIRS = {
    "fidelity": ("x_t", "x"),
    "edit": ("g_t", "g_x"),
    "protection": ("g_adv", "g_x"),
    "control": ("g_tx", "g_x"),
    "invisibility": ("x_adv", "x"),
    "subject": ("g_t", "x"),
}
RECIPES = {  # image -> (stage that makes it, the image it is made from)
    "x_adv": ("protect", "x"),
    "x_t": ("transform", "x_adv"),
    "x_tx": ("transform", "x"),
    "g_x": ("generate", "x"),
    "g_adv": ("generate", "x_adv"),
    "g_t": ("generate", "x_t"),
    "g_tx": ("generate", "x_tx"),
}
STAGE_COMPONENT = {"protect": "defense", "transform": "transform", "generate": "generator"}
ROW_COLUMNS = ["dataset", "image_id", "defense", "transform", "generator", "seed", "pair",
               "metric", "value", "n"]


# the result files' columns (benchmark.results)
GROUP_COLUMNS = ["dataset", "defense", "transform", "generator", "pair", "metric"]
LABEL_COLUMNS = ["dataset", "defense", "transform", "generator"]
# path: the clean image's file; generator: the edit's label (several with generator.target=all)
IMAGE_COLUMNS = ["image_id", "image", "stage", "key", "path", "generator"]
SUMMARY_COLUMNS = GROUP_COLUMNS + ["mean", "std", "n", "ci95_low", "ci95_high"]
SWEEP_COLUMNS = ["job", "status", "error"] + SUMMARY_COLUMNS
DERIVED_PAIRS = {"drop": ("protection", "edit")}  # protection - edit, per image


def base_label(label: str) -> str:
    """`jpeg(quality=50)` -> `jpeg`: the config name of a component label."""
    return str(label).split("(", 1)[0]


def needed_images(pairs: list[str]) -> list[str]:
    """Every image the pairs need, dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name == "x":
            return
        visit(RECIPES[name][1])
        order.append(name)

    for pair in pairs:
        for name in PAIRS[pair]:
            visit(name)
    return order


def variant_label(label: str, setting: str) -> str:
    """`stargan(target=all)` with setting `target=[Male]` -> `stargan(target=[Male])`: the label
    the same edit gets from a sweep over that setting."""
    key = setting.split("=", 1)[0]
    base, _, params = label.partition("(")
    kept = [p for p in params.rstrip(")").split(",") if p and not p.startswith(f"{key}=")]
    return f"{base}({','.join([*kept, setting])})"


@dataclass
class JobResult:
    rows: list[dict]
    stats: dict
    labels: dict
    # per image of the job: where each image it made lives in the cache (image_id, image,
    # stage, key); figures read them back
    images: list[dict] = field(default_factory=list)
