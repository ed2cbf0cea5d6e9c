"""``python -m vlm.train +exp=freeze_llm``: train the brand captioner (see conf/vlm/train.yaml)."""

from common import entry
from vlm.schemas import schemas_for


@entry.main("vlm")
def main(cfg):
    # Lightning, torch and the models load only once the config has composed: a typo fails in about a second.
    from common import run
    from vlm.build import build

    return run.train(cfg, build=build, schemas=schemas_for(cfg))


if __name__ == "__main__":
    main()
