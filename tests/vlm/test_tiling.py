"""InternVL dynamic tiling: the grid follows InternVL's own rule, and a sample's image positions match its tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlm.images import grid, load_tiles, num_tiles


def internvl_ratio(width: int, height: int, image_size: int, max_num: int, min_num: int = 1) -> tuple[int, int]:
    """InternVL's ``dynamic_preprocess`` grid choice, as written in its repository (the oracle)."""
    aspect_ratio = width / height
    target_ratios = sorted({(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
                            for j in range(1, n + 1) if min_num <= i * j <= max_num}, key=lambda x: x[0] * x[1])
    best_ratio_diff, best_ratio, area = float("inf"), (1, 1), width * height
    for ratio in target_ratios:
        ratio_diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if ratio_diff < best_ratio_diff:
            best_ratio_diff, best_ratio = ratio_diff, ratio
        elif ratio_diff == best_ratio_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best_ratio = ratio
    return best_ratio


def test_a_two_to_one_image_gets_internvls_grid_plus_a_thumbnail():
    cols, rows = internvl_ratio(896, 448, 448, 12)
    assert grid((896, 448), 448, 12) == (cols, rows) == (2, 1)
    assert num_tiles((896, 448), 448, 12) == cols * rows + 1  # + thumbnail
    assert num_tiles((896, 448), 448, 1) == 1  # max_num=1: one square image, no thumbnail


@pytest.mark.parametrize("seed", range(3))
def test_grid_matches_internvls_rule_on_random_sizes(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(20, 4000, size=2))
        max_num = int(rng.integers(1, 13))
        assert grid((w, h), 448, max_num) == internvl_ratio(w, h, 448, max_num), (w, h, max_num)


def test_tiles_are_the_resized_images_cells_row_by_row_then_the_thumbnail(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(40, 120, 3), dtype=np.uint8)  # 3:1
    Image.fromarray(arr).save(tmp_path / "wide.png")
    tiles = load_tiles(tmp_path / "wide.png", 16, max_num=6)
    cols, rows = internvl_ratio(120, 40, 16, 6)
    assert tiles.shape == (cols * rows + 1, 3, 16, 16)
    img = Image.fromarray(arr)
    canvas = np.asarray(img.resize((cols * 16, rows * 16), Image.BICUBIC)).transpose(2, 0, 1)
    for i in range(cols * rows):
        r, c = divmod(i, cols)
        assert np.array_equal(tiles[i], canvas[:, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16])
    assert np.array_equal(tiles[-1], np.asarray(img.resize((16, 16), Image.BICUBIC)).transpose(2, 0, 1))


def test_a_samples_image_positions_match_its_tiles(tmp_path):
    from omegaconf import OmegaConf

    from vlm.chat import IMAGE_TOKEN, encode
    from vlm.data import CaptionDataset, collate, read_records
    from vlm.models.llm import train_tokenizer
    from vlm.schemas import DataSchema

    Image.new("RGB", (200, 100), (10, 200, 30)).save(tmp_path / "wide.png")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "square.png")
    (tmp_path / "d.jsonl").write_text(
        '{"id": "w", "image": "wide.png", "brand": "Zorvik", "caption": "A bag by Zorvik."}\n'
        '{"id": "s", "image": "square.png", "brand": null, "caption": "A cup, no brand."}\n')
    cfg = OmegaConf.structured(DataSchema)
    cfg.tiles.max_num = 12
    recs = read_records(tmp_path / "d.jsonl", None, cfg)
    tok = train_tokenizer(["A bag by Zorvik.", "A cup, no brand.", "Describe the product in the image."], 300)
    per_tile = 3
    ds = CaptionDataset(recs, tok, per_tile, image_size=50, tiles=cfg.tiles)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    for i, rec in enumerate(recs):
        item = ds[i]
        n = num_tiles(rec.size, 50, 12)
        assert item["pixels"].shape == (n, 3, 50, 50)
        assert item["input_ids"].count(image_id) == item["prompt"].count(image_id) == n * per_tile
        # expanding the one encoded <image> equals encoding the conversation with the expansion
        direct = encode(tok, rec.messages, n * per_tile)
        assert item["input_ids"] == direct.input_ids and item["labels"] == direct.labels
    batch = collate(tok.pad_token_id)([ds[0], ds[1]])
    assert batch["n_tiles"] == [num_tiles(r.size, 50, 12) for r in recs]
    assert batch["pixels"].shape[0] == sum(batch["n_tiles"])
    assert int((batch["input_ids"] == image_id).sum()) == sum(batch["n_tiles"]) * per_tile
