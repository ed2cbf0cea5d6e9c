"""``python -m retrieval.train [+exp=...]``: train a product matcher (synthetic products on CPU by default)."""

from common import entry
from retrieval.schemas import SCHEMAS


@entry.main("retrieval")
def main(cfg):
    # Lightning, torch and the models load only once the config has composed: a typo fails in about a second.
    from common import run
    from retrieval.build import build

    return run.train(cfg, build=build, schemas=SCHEMAS)


if __name__ == "__main__":
    main()
