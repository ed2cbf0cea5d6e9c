"""``python -m retrieval.train [+exp=...]``: train a product matcher (synthetic products on CPU by default)."""

from common import entry, run
from retrieval.build import SCHEMAS, build


@entry.main("retrieval")
def main(cfg):
    return run.train(cfg, build=build, schemas=SCHEMAS)


if __name__ == "__main__":
    main()
