"""Hydra imports every ``hydra_plugins.*`` module before it composes a config (the same hook its launchers use
to register their configs): here the three packages' dataclass schemas enter the ConfigStore as
``schema/<package>/<node>``, so a YAML option says ``defaults: [/schema/textcls/data@_here_, _self_]`` and only
what differs from the schema, which holds each default once."""

from hydra.core.config_store import ConfigStore

from retrieval.schemas import SCHEMAS as RETRIEVAL
from textcls.schemas import NODES as TEXTCLS
from vlm.schemas import NODES as VLM


def register() -> None:
    cs = ConfigStore.instance()
    for package, schemas in (("vlm", VLM), ("textcls", TEXTCLS), ("retrieval", RETRIEVAL)):
        for node, schema in schemas.items():
            cs.store(group=f"schema/{package}", name=node, node=schema)


register()
