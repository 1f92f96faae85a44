"""Checks of the pipeline's settings that are not numbers: which splits may be used where, and
which method a size belongs to. Each returns one-line problems (empty: fine); the pipeline stops
on the first, before any work. Nothing here imports torch.
"""

from __future__ import annotations

SIZES = ("ADAPTER_DIM", "TOP_LAYERS", "PREFIX_LEN")  # a method's size: its flag in lower case
TEST_SPLIT = "test"


def split_problems(train: str, valid: str, select: str, select_split: str) -> list[str]:
    """The test split never reaches training, validation or selection (issue 29 case 2)."""
    problems = []
    for name, value in (("TRAIN_SPLIT", train), ("VALID_SPLIT", valid)):
        if value == TEST_SPLIT:
            problems.append(f"{name}=test: the test split is only decoded and scored, never trained or "
                            "validated on (use a train or valid split)")
    if select == "valid_metric" and select_split == TEST_SPLIT:
        problems.append("SELECT_SPLIT=test: the checkpoint is chosen on validation, never on the test "
                        "split (use a valid split, or SELECT=last)")
    return problems


def size_problems(method: str, sizes: dict[str, str]) -> list[str]:
    """A size (ADAPTER_DIM, TOP_LAYERS, PREFIX_LEN) given for a method that has no such flag:
    one line naming it and the methods it belongs to, as the method itself says (its `flags`)."""
    from nlg import methods

    own = set(methods.get(method).flags)
    if not own & {name.lower() for name in SIZES} and any(sizes.get(name) for name in SIZES):
        return [f"ADAPTER_DIM, TOP_LAYERS and PREFIX_LEN are settings of other methods than {method} "
                "(--method NAME)"]
    problems = []
    for name in SIZES:
        value = sizes.get(name) or ""
        if value and name.lower() not in own:
            owners = [other for other in methods.names() if name.lower() in methods.get(other).flags]
            problems.append(f"{name}={value} is a setting of {', '.join(owners)}, not of --method {method}")
    return problems


def problems(values: dict[str, str]) -> list[str]:
    """Every problem of the pipeline's NAME -> value settings that is not a number's."""
    found = split_problems(values.get("TRAIN_SPLIT", ""), values.get("VALID_SPLIT", ""),
                           values.get("SELECT", ""), values.get("SELECT_SPLIT", ""))
    if values.get("METHOD"):
        found += size_problems(values["METHOD"], values)
    return found
