"""``python -m textcls.train [+exp=NAME] [overrides]``: train and test a tagger (default: TextCNN on the
embedded synthetic car news, hierarchical gate + 12 sub-tags, CPU, minutes)."""

from common import entry
from textcls.schemas import SCHEMAS


@entry.main("textcls")
def main(cfg):
    # Lightning, torch and the models load only once the config has composed: a typo fails in about a second.
    from common import run
    from textcls.build import build

    return run.train(cfg, build=build, schemas=SCHEMAS)


if __name__ == "__main__":
    main()
