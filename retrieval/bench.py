"""``python -m retrieval.bench``: one Markdown table of product-matching baselines and FAISS indexes.

On each DeepMatcher set (``../shared/datasets/abt_buy``, ``amazon_walmart``; read in place), in one run:
TF-IDF char n-grams, MiniLM zero-shot, MiniLM fine-tuned (InfoNCE) with negatives mined by the zero-shot
model, and that model + a cross-encoder reranker (MiniLM initialised, pairwise BCE on the Ditto/DeepMatcher
train split). Retrieval: tableA titles of a held-out group split (30 % of the matches) ranked against all
of tableB — recall@1/10, MRR; Shopee F1 on the held-out pool with the threshold tuned on the validation
pool; pair F1 on the DeepMatcher test split (threshold tuned on its validation split), beside the published
Ditto anchor. Then FAISS Flat vs IVF vs HNSW on synthetic vectors: build time, QPS, recall@10 vs exact.

Flags shrink the run for small machines (``--faiss-n``, ``--epochs``, ``--sections``, ``--max-gallery``); the table says
what ran and is rewritten after each section, so a long run leaves its finished sections on disk.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common import io
from common.bench import load, machine
from common.metrics.classification import PRF
from common.metrics.retrieval import ranked_recall_at_k
from common.optim import nodes
from retrieval.data import (
    DataConfig,
    ItemLoader,
    PairDataset,
    RetrievalDataModule,
    Split,
    make_splits,
    read_deepmatcher,
    read_ditto,
    text_field,
)
from retrieval.knn import build_index
from retrieval.models.text import TextTower
from retrieval.module import RetrievalModule
from retrieval.negatives import mine_negatives
from retrieval.normalise import expand_codes
from retrieval.rerank import (
    PairDataModule,
    RerankerModule,
    best_pair_threshold,
    fuse,
    norm,
    pair_prf,
    rerank_scores,
    serialise,
)
from retrieval.scoring import score_matrices

ANCHORS = {"abt_buy": ("Ditto (Li et al. 2020)", 89.33), "amazon_walmart": ("Ditto (Li et al. 2020)", 86.76)}


def tfidf_scorer(cat):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True).fit(cat.titles)
    X = vec.transform(cat.titles)

    def scores(rows, cols):
        return (X[rows] @ X[cols].T).toarray().astype(np.float32)

    def pair_scores(left, right):
        return np.asarray((vec.transform(left).multiply(vec.transform(right))).sum(1)).ravel()

    return scores, pair_scores


def embed_scorer(encode, cat, needed):
    idx = np.asarray(sorted(needed))
    E = np.zeros((len(cat), 1), np.float32)
    emb = encode([cat.titles[i] for i in idx])
    E = np.zeros((len(cat), emb.shape[1]), np.float32)
    E[idx] = emb

    def scores(rows, cols):
        return E[rows] @ E[cols].T

    def pair_scores(left, right):
        uniq = sorted(set(left) | set(right))
        pos = {t: i for i, t in enumerate(uniq)}
        U = encode(uniq)
        return (U[[pos[t] for t in left]] * U[[pos[t] for t in right]]).sum(1)

    return scores, pair_scores, E


def _row(name, rows):
    method, m, prf, wall = rows[-1]
    print(f"[bench {name}] {method}: recall@1 {m['recall_at_1']:.3f} recall@10 {m['recall_at_10']:.3f} "
          f"MRR {m['mrr']:.3f} Shopee F1 {m['f1']:.3f} pair F1 {100 * prf.f1:.1f} ({wall:.0f} s)", flush=True)


def retrieval_metrics(scores, cat, splits):
    v = splits["val"]
    val, _ = score_matrices(scores(v.queries, v.gallery), scores(v.pool, v.pool), v, cat, "")
    t = splits["test"]
    test, _ = score_matrices(scores(t.queries, t.gallery), scores(t.pool, t.pool), t, cat, "", val["threshold"])
    return test


def pair_metrics(pair_scores, pairs_dir, fields, prep=str):
    def load(name):
        rows = read_ditto(pairs_dir / name)
        return ([prep(serialise(a, fields)) for a, _, _ in rows], [prep(serialise(b, fields)) for _, b, _ in rows],
                np.array([y for *_, y in rows]))

    lv, rv, yv = load("valid.txt")
    thr, _ = best_pair_threshold(pair_scores(lv, rv), yv)
    lt, rt, yt = load("test.txt")
    return pair_prf(yt, (pair_scores(lt, rt) >= thr).astype(int))


def minilm_encoder(tower, batch_size=128):
    import torch
    from tqdm import tqdm

    @torch.no_grad()
    def encode(texts):
        tower.eval()
        out = [tower(texts[i : i + batch_size]).numpy() for i in tqdm(range(0, len(texts), batch_size), desc="embedding", leave=False)]
        return np.concatenate(out).astype(np.float32)

    return encode


def finetune(cat, splits, negatives, args, root):
    """InfoNCE fine-tuning of the MiniLM tower with mined negatives (a Lightning run without logger)."""
    import lightning as L


    dm = RetrievalDataModule.__new__(RetrievalDataModule)
    L.LightningDataModule.__init__(dm)
    dm.cfg = DataConfig(source="deepmatcher", batch_size=args.batch_size, num_negatives=args.num_negatives)
    dm.train_tf = dm.eval_tf = None
    dm.catalog, dm.splits, dm.labels = cat, splits, {}
    dm.train_set = PairDataset(cat, splits["train"], ItemLoader(cat), args.num_negatives, args.seed, negatives)
    dm.fingerprint = ""
    steps = args.epochs * max(1, len(dm.train_set.anchors) // args.batch_size)
    opt, sched = nodes(lr=args.lr, weight_decay=0.01, schedule_name="linear", warmup_steps=max(1, steps // 10))
    module = RetrievalModule({"text": {"name_or_path": "minilm", "pooling": "mean", "max_length": args.max_length}, "image": None},
                             loss="infonce", temperature=args.temperature, symmetric=args.symmetric, optim=opt, scheduler=sched)
    trainer = L.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        limit_val_batches=0, enable_progress_bar=True, accelerator="cpu", default_root_dir=str(root))
    trainer.fit(module, datamodule=dm)
    return module


def train_reranker(pairs_dir, fields, args, root, held_out: set[str], prep=str):
    import lightning as L


    dm = PairDataModule(str(pairs_dir), fields, batch_size=args.batch_size, loss="bce", neg_per_pos=args.rerank_neg_per_pos,
                        seed=args.seed, exclude_texts=held_out)
    for name in ("train_pairs", "val_pairs", "test_pairs"):
        setattr(dm, name, [(prep(a), prep(b), y) for a, b, y in getattr(dm, name)])
    opt, sched = nodes(lr=args.rerank_lr, weight_decay=0.01, schedule_name="constant", warmup_steps=0)
    module = RerankerModule({"name_or_path": "minilm", "max_length": args.rerank_max_length}, loss="bce", optim=opt, scheduler=sched)
    trainer = L.Trainer(max_epochs=args.rerank_epochs, logger=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        check_val_every_n_epoch=args.rerank_epochs, accelerator="cpu", default_root_dir=str(root))
    trainer.fit(module, datamodule=dm)  # validation picks the threshold
    res = trainer.test(module, datamodule=dm, verbose=False)[0]
    return module, res


def bench_dataset(name, folder, args, root):
    fields = text_field(folder)
    cat = read_deepmatcher(folder, fields)
    splits = make_splits(cat, [0.5, 0.2, 0.3], args.seed)
    # no retrieval-test record in the reranker's training pairs (matched on the raw text, as the pair files hold it)
    held_out = {norm(cat.titles[i]) for i in splits["test"].pool}
    prep = expand_codes if args.normalise_codes else str  # every method gets the same inputs
    cat.titles = [prep(t) for t in cat.titles]
    if args.max_gallery and len(splits["test"].gallery) > args.max_gallery:
        # CPU budget: keep every matched tableB record plus a seeded sample of the unmatched ones
        gal = splits["test"].gallery
        matched = {cat.groups[i] for s in splits.values() for i in s.queries}
        keep = [i for i in gal if cat.groups[i] in matched]
        rest = [i for i in gal if cat.groups[i] not in matched]
        rng = np.random.default_rng(args.seed)
        keep += rng.choice(rest, size=max(0, min(len(rest), args.max_gallery - len(keep))), replace=False).tolist()
        gal = np.array(sorted(keep))
        for s in splits.values():
            s.gallery = gal
    pairs_dir = folder / "ditto_deepmatcher_splits"
    rows = []
    needed = set(np.concatenate([s.queries for s in splits.values()] + [s.pool for s in splits.values()] + [splits["test"].gallery]).tolist())

    t = time.perf_counter()
    sc, pair_sc = tfidf_scorer(cat)
    rows.append(("TF-IDF char 2-5 n-grams", retrieval_metrics(sc, cat, splits), pair_metrics(pair_sc, pairs_dir, fields, prep), time.perf_counter() - t))
    _row(name, rows)

    t = time.perf_counter()
    tower = TextTower("minilm", pooling="mean", max_length=args.max_length)
    enc = minilm_encoder(tower)
    sc, pair_sc, E = embed_scorer(enc, cat, needed)
    rows.append(("MiniLM-L6 zero-shot", retrieval_metrics(sc, cat, splits), pair_metrics(pair_sc, pairs_dir, fields, prep), time.perf_counter() - t))
    _row(name, rows)

    t = time.perf_counter()
    # training sees only its own matches: mining candidates and random negatives exclude every val/test record
    held = set(splits["val"].pool.tolist()) | set(splits["test"].pool.tolist())
    s = splits["train"]
    tr = Split(s.queries, np.array([i for i in s.gallery if int(i) not in held]), s.pool)
    rel = tr.relevant(cat)
    q_emb, g_emb = E[tr.queries], E[tr.gallery]
    mined = mine_negatives(q_emb, g_emb, rel, [set() for _ in rel], range_for_sampling=(2, args.mine_hi),
                           negative_number=args.negative_number, seed=args.seed)
    negatives = {int(q): [int(tr.gallery[j]) for j in n] for q, n in zip(tr.queries, mined, strict=True)}
    module = finetune(cat, {**splits, "train": tr}, negatives, args, root)
    tower = module.net.text
    enc = minilm_encoder(tower)
    sc, pair_sc, E = embed_scorer(enc, cat, needed)
    ft = retrieval_metrics(sc, cat, splits)
    rows.append(("MiniLM-L6 fine-tuned, mined negatives", ft, pair_metrics(pair_sc, pairs_dir, fields, prep), time.perf_counter() - t))
    _row(name, rows)

    t = time.perf_counter()
    reranker, res = train_reranker(pairs_dir, fields, args, root, held_out, prep)

    alpha, test_rr = rerank_fused(reranker, sc, cat, splits, ft["threshold"], args.rerank_k)
    prf = PRF(res["test/pair_precision"], res["test/pair_recall"], res["test/pair_f1"], 0)
    rows.append((f"+ cross-encoder reranker (top-{args.rerank_k}, weight {alpha:g} tuned on val)", test_rr, prf, time.perf_counter() - t))
    _row(name, rows)
    te = splits["test"]
    return rows, len(te.queries), f"{len(te.gallery)} of {sum(1 for x in cat.side if x == 'b')}"


ALPHAS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, float("inf"))


def rerank_fused(reranker, sc, cat, splits, threshold, k):
    """Rerank each query's bi-encoder top-k by ``bi-encoder score + alpha * cross-encoder logit``, with alpha
    (``inf`` = cross-encoder alone) picked on the validation split's recall@1; returns alpha and test metrics.
    The matching threshold stays the bi-encoder's: the reranker changes the ranking only."""

    def prepared(split):
        scores = sc(split.queries, split.gallery)
        for r, q in enumerate(split.queries):  # a record never retrieves itself (as score_matrices does)
            scores[r, split.gallery == q] = -1e4
        top = np.argsort(-scores, axis=1)[:, :k]
        logits = rerank_scores(reranker, [cat.titles[q] for q in split.queries],
                               [[cat.titles[split.gallery[j]] for j in row] for row in top])
        return scores, top, logits, sc(split.pool, split.pool)

    def metrics(split, prep, alpha):
        scores, top, logits, pool = prep
        boosted = scores.copy()
        for r, (row, lg) in enumerate(zip(top, logits, strict=True)):
            boosted[r, row[fuse(scores[r, row], lg, alpha)]] = 10.0 + np.arange(len(row), 0, -1)  # top-k first, fused order
        return score_matrices(boosted, pool, split, cat, "", threshold)[0]

    val = prepared(splits["val"])
    alpha = max(ALPHAS, key=lambda a: (metrics(splits["val"], val, a)["recall_at_1"], -a))  # ties: the smaller weight
    return alpha, metrics(splits["test"], prepared(splits["test"]), alpha)


def synthetic_vectors(n: int, dim: int, n_queries: int, seed: int, latent: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like unit vectors: n // 500 clusters in a ``latent``-dimensional space mapped into ``dim``
    dimensions (learned embeddings have a low intrinsic dimension; isotropic 256-d noise would make every
    neighbour nearly equidistant and the "true" top 10 a coin toss), plus queries that are perturbed copies of
    rows. Built in float32 chunks so a million rows never need a float64 copy."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(16, n // 500), latent), dtype=np.float32)
    proj = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32)  # latent x dim, orthonormal rows
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        z = centers[rng.integers(0, len(centers), e - s)] + rng.standard_normal((e - s, latent), dtype=np.float32)
        x[s:e] = z @ proj + 0.05 * rng.standard_normal((e - s, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(n, n_queries, replace=False)] + 0.02 * rng.standard_normal((n_queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def faiss_params(n: int) -> list[tuple[str, dict, str, tuple]]:
    """Flat (exact); IVF with ~sqrt(n) lists trained on 40 rows per list (FAISS warns below 39), searched at
    three ``nprobe``; HNSW M=16 (sized for a 2-core CPU) searched at three ``ef_search``. Each index is built
    once and searched at every value of its knob."""
    nlist = int(2 ** round(np.log2(max(16.0, np.sqrt(n)))))
    return [("flat", {}, "", (None,)),
            ("ivf", {"nlist": nlist, "train_size": min(n, 40 * nlist)}, "nprobe", (4, 16, 64)),
            ("hnsw", {"hnsw_m": 16, "ef_construction": 40}, "ef_search", (32, 128, 512))]


def bench_faiss(n: int, dim: int, n_queries: int, seed: int):
    import faiss


    x, q = synthetic_vectors(n, dim, n_queries, seed)
    out, exact = [], None
    for kind, kw, knob, values in faiss_params(n):
        t = time.perf_counter()
        index = build_index(x, kind, gpu=False, seed=seed, **kw)
        build = time.perf_counter() - t
        for v in values:
            if knob == "nprobe":
                index.nprobe = v
            elif knob == "ef_search":
                index.hnsw.efSearch = v
            t = time.perf_counter()
            _, ids = index.search(q, 10)
            qps = n_queries / (time.perf_counter() - t)
            if exact is None:
                exact = [set(r) for r in ids]
            params = {**kw, knob: v} if knob else kw
            out.append((kind, params, build, qps, ranked_recall_at_k(ids, exact, 10)))
            print(f"[bench faiss] {kind} {params}: build {build:.1f} s, {qps:,.0f} QPS, recall@10 {out[-1][-1]:.3f}", flush=True)
        del index
    return out, faiss.__version__


def dataset_section(name: str, folder: Path, args, root: Path) -> list[str]:
    if not (folder / "tableA.csv").exists():
        return [f"## {name}: skipped ({folder} not found)", ""]
    rows, nq, ng = bench_dataset(name, folder, args, root)
    anchor = ANCHORS.get(name)
    lines = [f"## {name}: {nq} held-out tableA queries vs {ng} tableB records; pair F1 on the DeepMatcher test split"
             + (f" (published anchor: {anchor[0]} pair F1 {anchor[1]})" if anchor else ""), "",
             "| method | recall@1 | recall@10 | MRR | Shopee F1 | pair P | pair R | pair F1 | vs anchor | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, m, prf, wall in rows:
        gap = f"{100 * prf.f1 - anchor[1]:+.1f}" if anchor else ""
        lines.append(f"| {method} | {m['recall_at_1']:.3f} | {m['recall_at_10']:.3f} | {m['mrr']:.3f} | {m['f1']:.3f} | "
                     f"{prf.precision:.3f} | {prf.recall:.3f} | {100 * prf.f1:.1f} | {gap} | {wall:.0f} |")
    base, tuned = rows[0][1]["recall_at_1"], rows[2][1]["recall_at_1"]
    return [*lines, "", f"fine-tuned recall@1 - TF-IDF recall@1 = {tuned - base:+.3f} "
            f"(target >= +0.10: {'met' if tuned - base >= 0.10 else 'NOT met'})", ""]


def faiss_section(args) -> list[str]:
    res, ver = bench_faiss(args.faiss_n, args.faiss_dim, args.faiss_queries, args.seed)
    lines = [f"## FAISS {ver} on {args.faiss_n:,} x {args.faiss_dim} synthetic unit vectors (clusters in a 32-d subspace), "
             f"{args.faiss_queries} queries, CPU", "", "| index | params | build s | QPS | x flat QPS | recall@10 vs exact |", "|---|---|---|---|---|---|"]
    flat_qps = res[0][3]
    for kind, kw, build, qps, rec in res:
        lines.append(f"| {kind} | {', '.join(f'{k}={v}' for k, v in kw.items()) or '-'} | {build:.1f} | {qps:,.0f} | "
                     f"{qps / flat_qps:.1f} | {rec:.3f} |")
    return [*lines, ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"))
    p.add_argument("--sections", "--datasets", dest="sections", default="abt_buy,faiss,amazon_walmart",
                   help="data sets (folders under --shared) and 'faiss', in run order; the table is rewritten after each")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-negatives", type=int, default=1)
    p.add_argument("--negative-number", type=int, default=10)
    p.add_argument("--mine-hi", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--max-length", type=int, default=48, help="MiniLM tokens per title (zero-shot and fine-tuned)")
    p.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=True, help="InfoNCE both ways")
    p.add_argument("--normalise-codes", action=argparse.BooleanOptionalAction, default=True,
                   help="append separator-free product codes (DSC-W300 -> DSCW300) to every method's input")
    p.add_argument("--rerank-epochs", type=int, default=3)
    p.add_argument("--rerank-lr", type=float, default=8e-5)
    p.add_argument("--rerank-neg-per-pos", type=int, default=3, help="negatives kept per positive pair; 0 = all")
    p.add_argument("--rerank-max-length", type=int, default=64)
    p.add_argument("--rerank-k", type=int, default=5)
    p.add_argument("--max-gallery", type=int, default=0, help="cap tableB (all matched records kept); 0 = all")
    p.add_argument("--faiss-n", type=int, default=1_000_000)
    p.add_argument("--faiss-dim", type=int, default=256)
    p.add_argument("--faiss-queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="logs/retrieval.bench/bench.md")
    args = p.parse_args(argv)
    import lightning as L

    L.seed_everything(args.seed)
    start = time.perf_counter()
    root = Path(args.out).parent
    lines = ["# retrieval bench", "", f"command: `python -m retrieval.bench {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"machine at start: {machine()}", "",
             f"settings: inputs = the name/title column{' with separator-free product codes appended' if args.normalise_codes else ''}"
             f" (same for every method); fine-tuning {args.epochs} epochs, lr {args.lr:g} (10 % warm-up, linear decay), batch "
             f"{args.batch_size}, temperature {args.temperature:g}, {'symmetric ' if args.symmetric else ''}InfoNCE, "
             f"{args.num_negatives} mined negative(s) per query (ranks 2-{args.mine_hi} of the zero-shot model, train records only); "
             f"reranker {args.rerank_epochs} epochs, lr {args.rerank_lr:g}, max_length {args.rerank_max_length}, "
             f"{args.rerank_neg_per_pos} negatives per positive; max gallery {args.max_gallery or 'all'}", ""]
    shared = Path(args.shared)
    sections = [d for d in args.sections.split(",") if d]
    for k, name in enumerate(sections):
        if name == "faiss":
            lines += faiss_section(args)
        else:
            lines += dataset_section(name, shared / name, args, root)
        print("\n".join(lines), flush=True)
        if k < len(sections) - 1:
            io.write_text(args.out, "\n".join([*lines, f"(run in progress: {', '.join(sections[k + 1:])} not yet measured)", ""]))
    lines += ["", f"total wall time: {time.perf_counter() - start:.0f} s; load average (1/5/15 min) at end {load()}", ""]
    text = "\n".join(lines)
    io.write_text(args.out, text)
    print(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
