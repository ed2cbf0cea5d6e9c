"""``python -m textcls.train [+exp=NAME] [overrides]``: train and test a tagger (default: TextCNN on the
embedded synthetic car news, hierarchical gate + 12 sub-tags, CPU, minutes)."""

from common import entry, run
from textcls.build import SCHEMAS, build


@entry.main("textcls")
def main(cfg):
    return run.train(cfg, build=build, schemas=SCHEMAS)


if __name__ == "__main__":
    main()
