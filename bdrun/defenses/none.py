"""``defense=none``: the backdoored model is evaluated as it is."""

from bdrun.defenses.base import Defense, DefenseConfig
from bdrun.defenses.registry import DEFENSES


@DEFENSES.register("none", DefenseConfig)
class NoDefense(Defense):
    kind = "none"
    defends = False
