"""``python -m vlm.ingest table=<products.csv|.parquet|.jsonl>``: a product table -> fetched, verified images in a
content-addressed cache -> the records JSONL (``{id, image, brand, title?, description?, source, sha256}``)
that ``vlm.annotate +annotate=captions`` and ``vlm.train data=jsonl`` read (see :mod:`vlm.ingestion`).

    python -m vlm.ingest table=/data/mytheresa.parquet columns.image=image_url columns.brand=designer name=mytheresa
    python -m vlm.brands logs/vlm.ingest/mytheresa/records.jsonl logs/vlm.ingest/other/records.jsonl --min-samples 100

Re-running the same command fetches only the images it does not have; dead links and files that are not
images are listed in ``<out_dir>/rejects.jsonl`` with the reason, never a crash.
"""

from common import entry
from vlm.ingestion.runner import run


@entry.main("vlm", config_name="ingest")
def main(cfg):
    run(cfg)


if __name__ == "__main__":
    main()
