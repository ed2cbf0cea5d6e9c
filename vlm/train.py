"""``python -m vlm.train +exp=freeze_llm``: train the brand captioner (see conf/vlm/train.yaml)."""

from common import entry, run
from vlm.build import build
from vlm.schemas import SCHEMAS


@entry.main("vlm")
def main(cfg):
    return run.train(cfg, build=build, schemas=SCHEMAS)


if __name__ == "__main__":
    main()
