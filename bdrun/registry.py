"""One registry mechanism for every config group that has several implementations.

A method registers its implementation together with the dataclass that describes its knobs::

    @ATTACKS.register("badnets", BadNetsConfig)
    class BadNets(DataPoisoningAttack): ...

The YAML file ``conf/attack/badnets.yaml`` holds ``name: badnets`` and the knobs' defaults. ``build`` checks the
composed config node against the dataclass (unknown keys, types, and the ranges that ``__post_init__`` checks)
and turns every problem into a one-line :class:`BdrunError` naming the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bdrun.errors import BdrunError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    schema: type
    factory: Callable[[Any], T]


def parse_config(schema: type, node: DictConfig | dict, where: str) -> Any:
    """Validate ``node`` against the dataclass ``schema`` and return an instance of it.

    ``where`` is the config path of the node (``attack``), used in error messages.
    """
    try:
        if isinstance(node, DictConfig):  # resolve interpolations (${paths.data_dir}) against the whole config
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
        reason = str(err).splitlines()[0]
        raise BdrunError(f"bad config value {where}.{key}: {reason}") from None


class Registry(Generic[T]):
    """Maps a config group's ``name`` field to (knob schema, implementation)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, schema: type) -> Callable[[Callable[[Any], T]], Callable[[Any], T]]:
        def decorate(factory: Callable[[Any], T]) -> Callable[[Any], T]:
            if name in self._entries:
                raise ValueError(f"{self.group} '{name}' is registered twice")
            self._entries[name] = Entry(name, schema, factory)
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise BdrunError(f"unknown {self.group} '{name}'; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def parse(self, node: DictConfig | dict) -> Any:
        """The validated knob dataclass for a config node with a ``name`` field."""
        name = node.get("name") if node is not None else None
        if name is None:
            raise BdrunError(f"the {self.group} config has no 'name'; pick one with {self.group}=<choice>")
        return parse_config(self.entry(name).schema, node, self.group)

    def build(self, node: DictConfig | dict) -> T:
        """Validate the node and construct the implementation from its knobs."""
        config = self.parse(node)
        return self.entry(config.name).factory(config)
