"""``python -m tests.common.toy.train``: the shared entry-point machinery on a toy task."""

from pathlib import Path

from common import entry, run


@entry.main("toy", config_path=str(Path(__file__).parent / "conf"))
def main(cfg):
    return run.train(cfg)


if __name__ == "__main__":
    main()
