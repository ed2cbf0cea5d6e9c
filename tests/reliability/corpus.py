"""The corpus of bad inputs, one table per package: ``(id, module, args, expected error line, must not exist)``.

``module`` is what ``python -m`` runs (``module:function`` where the entry point is not ``main``). In args,
paths and the expected line, ``{tmp}`` is the case's temp dir and ``{bad}`` the folder of prepared bad inputs
(:mod:`tests.reliability.bad_inputs`). ``expected`` is a regex for the one ``error:`` line, matched in full.
Every case also checks that nothing but Hydra's own ``.hydra/`` and log file is left in the run dir.
"""

from __future__ import annotations

TRAIN = ["logger=none", "callbacks.progress_bar=null", "paths.log_dir={tmp}/logs", "hydra.run.dir={tmp}/run", "paths.cache_dir={tmp}/cache"]
TOOL = ["paths.log_dir={tmp}/logs", "hydra.run.dir={tmp}/run", "paths.cache_dir={tmp}/cache"]
RUN_OUTPUTS = ["{tmp}/run/checkpoints", "{tmp}/run/metrics.json"]

TOY = "tests.common.toy.train"
TOY_CASES = [
    ("toy-trainer-key-typo", TOY, [*TRAIN, "trainer.max_epoch=1"], r"error: trainer\.max_epoch: not a parameter of lightning\.pytorch\.Trainer \(did you mean 'max_epochs'\?\)", []),
    ("toy-yaml-overlay-typo", TOY, [*TRAIN, "+exp=typo"], r"error: trainer\.max_epoch: not a parameter of lightning\.pytorch\.Trainer \(did you mean 'max_epochs'\?\)", RUN_OUTPUTS),
    ("toy-wrong-type", TOY, [*TRAIN, "module.lr=fast"], r"error: module\.lr: expected float, got str 'fast'", RUN_OUTPUTS),
    ("toy-wrong-type-int", TOY, [*TRAIN, "trainer.max_epochs=many"], r"error: trainer\.max_epochs: expected int or null, got str 'many'", []),
    ("toy-unknown-target", TOY, [*TRAIN, "data._target_=tests.common.toy.model.Nope"], r"error: cannot import _target_ 'tests\.common\.toy\.model\.Nope'", []),
    ("toy-unknown-module-key", TOY, [*TRAIN, "+module.lrr=0.1"], r"error: module\.lrr: not a parameter of tests\.common\.toy\.model\.ToyModule \(did you mean 'lr'\?\)", []),
    ("toy-missing-ckpt", TOY, [*TRAIN, "ckpt_path={tmp}/nope.ckpt"], r"error: ckpt_path: no checkpoint file at {tmp}/nope\.ckpt", RUN_OUTPUTS),
    ("toy-resume-without-run", TOY, [*TRAIN, "ckpt_path=last"], r"error: ckpt_path=last: no earlier toy\.train run with overrides .* left a last\.ckpt under {tmp}/logs/toy\.train", []),
    ("toy-unknown-optimized-metric", TOY, [*TRAIN, "optimized_metric=val/acc", "trainer.max_epochs=1"], r"error: optimized_metric: 'val/acc' was not logged; logged: .*", ["{tmp}/run/metrics.json"]),
    ("toy-unknown-exp", TOY, [*TRAIN, "+exp=nope"], r"error: In 'train': Could not find 'exp/nope'; Available options in 'exp': fast, typo", []),
    ("toy-unknown-trainer-option", TOY, [*TRAIN, "trainer=tpu"], r"error: In 'train_base': Could not find 'trainer/tpu'; Available options in 'trainer': cpu, ddp, .*", []),
]

TC, TC_EVAL, TC_PREDICT = "textcls.train", "textcls.eval", "textcls.predict"
JSONL = [*TRAIN, "data=jsonl"]
TOUTIAO = [*TRAIN, "data=toutiao"]
TEXTCLS_CASES = [
    ("textcls-invalid-json", TC, [*JSONL, "data.train_file={bad}/tc_bad_json.jsonl"], r"error: {bad}/tc_bad_json\.jsonl:2: invalid JSON \(.+ at column \d+\)", RUN_OUTPUTS),
    ("textcls-empty-text", TC, [*JSONL, "data.train_file={bad}/tc_empty_text.jsonl"], r"error: {bad}/tc_empty_text\.jsonl:2: field 'text' is empty", RUN_OUTPUTS),
    ("textcls-label-not-in-taxonomy", TC, [*JSONL, "data.train_file={bad}/tc_unknown_label.jsonl", "data.taxonomy={bad}/taxonomy.txt"],
     r"error: {bad}/tc_unknown_label\.jsonl:3: label '新车资讯--试驾' is not in the taxonomy \(新车资讯, 新车资讯--新车上市, 新车资讯--谍照\)", RUN_OUTPUTS),
    ("textcls-gbk-jsonl", TC, [*JSONL, "data.train_file={bad}/tc_gbk.jsonl"],
     r"error: {bad}/tc_gbk\.jsonl:2: not UTF-8 text \(byte 0xc0 at column 11\); save the file as UTF-8", RUN_OUTPUTS),
    ("textcls-label-not-a-string", TC, [*JSONL, "data.train_file={bad}/tc_label_not_text.jsonl"],
     r"error: {bad}/tc_label_not_text\.jsonl:2: field 'doc_label': label 1 must be a non-empty string", RUN_OUTPUTS),
    ("textcls-missing-file", TC, [*JSONL, "data.train_file={tmp}/none.jsonl"], r"error: {tmp}/none\.jsonl: no such file", RUN_OUTPUTS),
    ("textcls-empty-file", TC, [*JSONL, "data.train_file={bad}/empty.jsonl"], r"error: {bad}/empty\.jsonl: no records", RUN_OUTPUTS),
    ("textcls-directory-as-file", TC, [*JSONL, "data.train_file={bad}/dir.jsonl"], r"error: {bad}/dir\.jsonl: is a directory, expected a file", []),
    ("textcls-taxonomy-child-first", TC, [*JSONL, "data.train_file={bad}/tc_two_docs.jsonl", "data.taxonomy={bad}/taxonomy_child_first.txt"],
     r"error: {bad}/taxonomy_child_first\.txt:1: label '新车资讯--谍照' comes before its parent '新车资讯'", RUN_OUTPUTS),
    ("textcls-taxonomy-missing", TC, [*JSONL, "data.train_file={bad}/tc_two_docs.jsonl", "data.taxonomy={tmp}/none.txt"], r"error: {tmp}/none\.txt: no such taxonomy file", []),
    ("textcls-too-few-to-split", TC, [*JSONL, "data.train_file={bad}/tc_two_docs.jsonl"],
     r"error: data\.split: 2 records are too few to split into \[0\.8, 0\.1, 0\.1\] \(a part would be empty\)", RUN_OUTPUTS),
    ("textcls-toutiao-too-few-fields", TC, [*TOUTIAO, "data.train_file={bad}/toutiao_short.txt"], r"error: {bad}/toutiao_short\.txt:2: expected 5 '_!_'-separated fields, got 3", RUN_OUTPUTS),
    ("textcls-toutiao-gbk", TC, [*TOUTIAO, "data.train_file={bad}/toutiao_gbk.txt"],
     r"error: {bad}/toutiao_gbk\.txt:2: not UTF-8 text \(byte 0xc0 at column 22\); save the file as UTF-8", RUN_OUTPUTS),
    ("textcls-toutiao-unknown-code", TC, [*TOUTIAO, "data.train_file={bad}/toutiao_code.txt"], r"error: {bad}/toutiao_code\.txt:2: unknown class code '105' \(known: 100, 101, .*, 116\)", RUN_OUTPUTS),
    ("textcls-toutiao-code-name-mismatch", TC, [*TOUTIAO, "data.train_file={bad}/toutiao_name.txt"], r"error: {bad}/toutiao_name\.txt:2: class code 103 is 'news_sports', not 'news_car'", []),
    ("textcls-toutiao-bad-on-bad-record", TC, [*TOUTIAO, "data.train_file={bad}/toutiao_code.txt", "data.on_bad_record=ignore"],
     r"error: data\.on_bad_record: expected 'error' or 'skip', got 'ignore'", RUN_OUTPUTS),
    ("textcls-pos-weight-word", TC, [*TRAIN, "module.pos_weight=lots", "data.synth.n=300"], r"error: module\.pos_weight: expected null, auto, a positive number or a list of them, got 'lots'", RUN_OUTPUTS),
    ("textcls-pos-weight-length", TC, [*TRAIN, "module.pos_weight=[1,2]", "data.synth.n=300"], r"error: module\.pos_weight: 2 values for 13 labels", RUN_OUTPUTS),
    ("textcls-config-typo", TC, [*TRAIN, "+data.tokenize=word"], r"error: data\.tokenize: unknown key \(did you mean 'tokenizer'\?\)", RUN_OUTPUTS),
    ("textcls-config-wrong-type", TC, [*TRAIN, "data.max_len=long"], r"error: data\.max_len: Value 'long' of type 'str' could not be converted to Integer", []),
    ("textcls-model-typo", TC, [*TRAIN, "+model.kernel_size=[3]", "data.synth.n=300"], r"error: model\.kernel_size: not a parameter of textcls\.models\.TextCNN \(did you mean 'kernel_sizes'\?\)", RUN_OUTPUTS),
    ("textcls-unknown-exp", TC, [*TRAIN, "+exp=nope"], r"error: In 'train': Could not find 'exp/nope'; Available options in 'exp': bert, .*, two_stage", []),
    ("textcls-eval-missing-ckpt", TC_EVAL, [*TOOL, "logger=none", "ckpt={tmp}/none.ckpt", "data={bad}/tc_two_docs.jsonl"], r"error: ckpt: no checkpoint file at {tmp}/none\.ckpt", []),
    ("textcls-eval-corrupt-ckpt", TC_EVAL, [*TOOL, "logger=none", "ckpt={bad}/corrupt.ckpt", "data={bad}/tc_two_docs.jsonl"],
     r"error: ckpt: {bad}/corrupt\.ckpt is not a readable TextClassifier checkpoint \(UnpicklingError: .+\)", []),
    ("textcls-eval-no-ckpt", TC_EVAL, [*TOOL, "logger=none", "data={bad}/tc_two_docs.jsonl"], r"error: ckpt: missing mandatory value; give it on the command line \(ckpt=\.\.\.\)", []),
    ("textcls-predict-missing-input", TC_PREDICT, [*TOOL, "ckpt={bad}/corrupt.ckpt", "input={tmp}/none.txt", "output={tmp}/out.jsonl"], r"error: {tmp}/none\.txt: no such file", ["{tmp}/out.jsonl"]),
    ("textcls-predict-gbk-input", TC_PREDICT, [*TOOL, "ckpt={bad}/corrupt.ckpt", "input={bad}/texts_gbk.txt", "output={tmp}/out.jsonl"],
     r"error: {bad}/texts_gbk\.txt:1: not UTF-8 text \(byte 0xc3 at column 3\); save the file as UTF-8", ["{tmp}/out.jsonl"]),
    ("textcls-predict-unwritable-output", TC_PREDICT, [*TOOL, "ckpt={bad}/corrupt.ckpt", "input={bad}/texts.txt", "output={bad}/texts.txt/out.jsonl"],
     r"error: output: cannot create {bad}/texts\.txt/out\.jsonl: {bad}/texts\.txt is not a directory", []),
    ("textcls-synth-unwritable-out", "textcls.synth", ["--out", "{bad}/texts.txt/carnews", "--n", "50"],
     r"error: --out: cannot create {bad}/texts\.txt/carnews/train\.jsonl: {bad}/texts\.txt is not a directory", []),
]

VLM, SERVE, ANNOTATE = "vlm.train", "vlm.serve:_main", "vlm.annotate"
VJSONL = [*TRAIN, "data=jsonl"]
VLM_CASES = [
    ("vlm-record-without-image", VLM, [*VJSONL, "data.train_file={bad}/v_no_image.jsonl"], r"error: {bad}/v_no_image\.jsonl:2: field 'image' must be a string, got NoneType", RUN_OUTPUTS),
    ("vlm-image-file-missing", VLM, [*VJSONL, "data.train_file={bad}/v_missing_image.jsonl"], r"error: {bad}/v_missing_image\.jsonl:2: {bad}/gone\.png: missing image", RUN_OUTPUTS),
    ("vlm-corrupt-image", VLM, [*VJSONL, "data.train_file={bad}/v_corrupt_image.jsonl"], r"error: {bad}/v_corrupt_image\.jsonl:2: {bad}/corrupt\.png: corrupt image \(.+\)", RUN_OUTPUTS),
    ("vlm-record-without-caption", VLM, [*VJSONL, "data.train_file={bad}/v_no_caption.jsonl"], r"error: {bad}/v_no_caption\.jsonl:2: record needs 'caption' or 'conversations'", RUN_OUTPUTS),
    ("vlm-llava-without-assistant", VLM, [*VJSONL, "data.train_file={bad}/v_llava_no_answer.jsonl"], r"error: {bad}/v_llava_no_answer\.jsonl:2: conversation has no assistant \(gpt\) turn", RUN_OUTPUTS),
    ("vlm-alias-unknown-brand", VLM, [*VJSONL, "data.train_file={bad}/v_good.jsonl", "data.val_file={bad}/v_good.jsonl", "data.brand_aliases={bad}/aliases_unknown_brand.json"],
     r"error: {bad}/aliases_unknown_brand\.json: aliases given for unknown brand\(s\): Acme", RUN_OUTPUTS),
    ("vlm-too-few-to-hold-out-val", VLM, [*VJSONL, "data.train_file={bad}/v_one.jsonl"],
     r"error: data\.val_fraction: 1 training records are too few to hold out 0\.1 for validation; give data\.val_file", RUN_OUTPUTS),
    ("vlm-alias-bad-json", VLM, [*VJSONL, "data.train_file={bad}/v_good.jsonl", "data.brand_aliases={bad}/aliases_bad.json"],
     r"error: {bad}/aliases_bad\.json:1: cannot parse brand aliases \(invalid JSON: .+ at column 2\)", []),
    ("vlm-alias-missing", VLM, [*VJSONL, "data.train_file={bad}/v_good.jsonl", "data.brand_aliases={tmp}/none.json"], r"error: {tmp}/none\.json: brand alias file not found", []),
    ("vlm-jsonl-without-train-file", VLM, VJSONL, r"error: data\.train_file: required when data\.source=jsonl", []),
    ("vlm-config-typo", VLM, [*TRAIN, "+data.batchsize=3"], r"error: data\.batchsize: unknown key \(did you mean 'batch_size'\?\)", RUN_OUTPUTS),
    ("vlm-config-wrong-type", VLM, [*TRAIN, "data.batch_size=big"], r"error: data\.batch_size: Value 'big' of type 'str' could not be converted to Integer", []),
    ("vlm-model-typo", VLM, [*TRAIN, "+model.lora.rank=8"], r"error: model\.lora\.rank: unknown key", []),
    ("vlm-serve-remote-host", SERVE, [*TOOL, "host=0.0.0.0"], r"error: host: '0\.0\.0\.0' would expose the server beyond this machine; set allow_remote=true to mean it", []),
    ("vlm-serve-bad-port", SERVE, [*TOOL, "port=70000"], r"error: port: must be in \[0, 65535\], got 70000", []),
    ("vlm-serve-port-not-a-number", SERVE, [*TOOL, "port=http"], r"error: port: must be an integer in \[0, 65535\], got 'http'", []),
    ("vlm-serve-missing-checkpoint", SERVE, [*TOOL, "checkpoint={tmp}/nope", "port=0"], r"error: {tmp}/nope: not a captioner export \(no captioner\.json\)", []),
    ("vlm-annotate-no-classes", ANNOTATE, TOOL, r"error: classes: give classes\.list \(a list\) or classes\.file \(a YAML list of classes\)", ["{tmp}/logs/vlm.annotate"]),
    ("vlm-annotate-classes-not-yaml", ANNOTATE, [*TOOL, "classes.file={bad}/classes_not_yaml.yaml"],
     r"error: classes\.file: {bad}/classes_not_yaml\.yaml: not valid YAML \(.+\)", ["{tmp}/logs/vlm.annotate"]),
    ("vlm-annotate-class-unknown-key", ANNOTATE, [*TOOL, "classes.file={bad}/classes_unknown_key.yaml"],
     r"error: classes\.file {bad}/classes_unknown_key\.yaml\[0\]: unknown key\(s\) colour \(expected name, definition, aliases, none\)", ["{tmp}/logs/vlm.annotate"]),
    ("vlm-annotate-bad-temperature", ANNOTATE, [*TOOL, "+annotate=synthetic", "generation.temperature=5"], r"error: generation\.temperature: expected a number in \[0\.0, 2\.0\], got 5", ["{tmp}/logs/vlm.annotate"]),
    ("vlm-annotate-unknown-mode", ANNOTATE, [*TOOL, "+annotate=synthetic", "run_modes=[nope]"], r"error: run_modes: unknown mode\(s\) nope \(modes: free, given, limited\)", ["{tmp}/logs/vlm.annotate"]),
    ("vlm-annotate-missing-data", ANNOTATE, [*TOOL, "+annotate=synthetic", "data.path={tmp}/none.jsonl"], r"error: {tmp}/none\.jsonl: no such file", ["{tmp}/logs/vlm.annotate"]),
    ("vlm-annotate-unknown-class", ANNOTATE, [*TOOL, "+annotate=synthetic", "data.path={bad}/annotate_unknown_class.jsonl"],
     r"error: {bad}/annotate_unknown_class\.jsonl:2: .*'Acme'.*", ["{tmp}/logs/vlm.annotate"]),
    ("vlm-generate-missing-image", "vlm.generate", ["--images", "{tmp}/none.png", "--out", "{tmp}/captions.jsonl", "--captioner", "{tmp}"],
     r"error: {tmp}/none\.png: missing image", ["{tmp}/captions.jsonl"]),
]

RT, MINE, RT_EVAL = "retrieval.train", "retrieval.mine", "retrieval.eval"
SHOPEE = [*TRAIN, "data=shopee", "model.image=null"]
DM = [*TRAIN, "data=deepmatcher", "model.image=null"]
RETRIEVAL_CASES = [
    ("retrieval-shopee-missing-image", RT, [*SHOPEE, "data.path={bad}/shopee_missing_image.csv"], r"error: {bad}/shopee_missing_image\.csv:3: missing image {bad}/images/gone\.png", RUN_OUTPUTS),
    ("retrieval-shopee-empty-title", RT, [*SHOPEE, "data.path={bad}/shopee_empty_title.csv"], r"error: {bad}/shopee_empty_title\.csv:3: field 'title' is empty", RUN_OUTPUTS),
    ("retrieval-shopee-duplicate-id", RT, [*SHOPEE, "data.path={bad}/shopee_duplicate_id.csv"], r"error: {bad}/shopee_duplicate_id\.csv:3: duplicate posting_id 'p1' \(first seen on line 2\)", RUN_OUTPUTS),
    ("retrieval-shopee-gbk", RT, [*SHOPEE, "data.path={bad}/shopee_gbk.csv"],
     r"error: {bad}/shopee_gbk\.csv:3: not UTF-8 text \(byte 0xc3 at column 15\); save the file as UTF-8", RUN_OUTPUTS),
    ("retrieval-shopee-unknown-column", RT, [*SHOPEE, "data.path={bad}/shopee_unknown_column.csv"],
     r"error: {bad}/shopee_unknown_column\.csv:1: unknown column\(s\) colour; expected posting_id, image, image_phash, title, label_group", RUN_OUTPUTS),
    ("retrieval-shopee-missing-column", RT, [*SHOPEE, "data.path={bad}/shopee_missing_column.csv"],
     r"error: {bad}/shopee_missing_column\.csv:1: missing column\(s\) image_phash; header is posting_id, image, title, label_group", []),
    ("retrieval-shopee-short-row", RT, [*SHOPEE, "data.path={bad}/shopee_short_row.csv"], r"error: {bad}/shopee_short_row\.csv:3: expected 5 fields", []),
    ("retrieval-deepmatcher-without-table-a", RT, [*DM, "data.path={bad}/dm_no_table_a"],
     r"error: {bad}/dm_no_table_a/tableA\.csv: no such file \(a DeepMatcher folder holds tableA\.csv, tableB\.csv and matches\)", RUN_OUTPUTS),
    ("retrieval-deepmatcher-unknown-match-id", RT, [*DM, "data.path={bad}/dm_unknown_id"], r"error: {bad}/dm_unknown_id/matches\.csv:3: tableB_id '99' is not in tableB\.csv", RUN_OUTPUTS),
    ("retrieval-negatives-file-without-pos", RT, [*SHOPEE, "data.path={bad}/shopee_good.csv", "data.negatives_file={bad}/flag_no_pos.jsonl"],
     r"error: {bad}/flag_no_pos\.jsonl:2: field 'pos' must be a non-empty list of non-empty strings", RUN_OUTPUTS),
    ("retrieval-unknown-data-source", RT, [*TRAIN, "data.source=csv"], r"error: data\.source: expected synthetic\|shopee\|deepmatcher\|query_gallery\|flag_jsonl, got 'csv'", RUN_OUTPUTS),
    ("retrieval-old-data-kind", RT, [*TRAIN, "data.kind=csv"], r"error: data\.kind: renamed to data\.source", []),
    ("retrieval-config-typo", RT, [*TRAIN, "+data.imagedir=x"], r"error: data\.imagedir: unknown key \(did you mean 'image_dir'\?\)", RUN_OUTPUTS),
    ("retrieval-config-wrong-type", RT, [*TRAIN, "data.batch_size=big"], r"error: data\.batch_size: Value 'big' of type 'str' could not be converted to Integer", []),
    ("retrieval-model-typo", RT, [*TRAIN, "+model.temprature=0.1"], r"error: model\.temprature: unknown key \(did you mean 'temperature'\?\)", []),
    ("retrieval-mine-invalid-json", MINE, [*TOOL, "input_file={bad}/flag_bad_json.jsonl", "output_file={tmp}/mined.jsonl"],
     r"error: {bad}/flag_bad_json\.jsonl:2: invalid JSON \(.+ at column \d+\)", ["{tmp}/mined.jsonl"]),
    ("retrieval-mine-missing-pos", MINE, [*TOOL, "input_file={bad}/flag_no_pos.jsonl", "output_file={tmp}/mined.jsonl"],
     r"error: {bad}/flag_no_pos\.jsonl:2: field 'pos' must be a non-empty list of non-empty strings", ["{tmp}/mined.jsonl"]),
    ("retrieval-mine-bad-range", MINE, [*TOOL, "input_file={bad}/flag_good.jsonl", "output_file={tmp}/mined.jsonl", "range_for_sampling=200-2"],
     r"error: range_for_sampling: need 1 <= LO <= HI, got '200-2'", ["{tmp}/mined.jsonl"]),
    ("retrieval-mine-unwritable-output", MINE, [*TOOL, "input_file={bad}/flag_good.jsonl", "output_file={bad}/flag_good.jsonl/mined.jsonl"],
     r"error: output_file: cannot create {bad}/flag_good\.jsonl/mined\.jsonl: {bad}/flag_good\.jsonl is not a directory", []),
    ("retrieval-eval-missing-ckpt", RT_EVAL, [*TOOL, "logger=none", "ckpt={tmp}/none.ckpt", "data.path={bad}/dm_unknown_id"], r"error: ckpt: no checkpoint file at {tmp}/none\.ckpt", ["{tmp}/run/metrics.json"]),
    ("retrieval-eval-corrupt-ckpt", RT_EVAL, [*TOOL, "logger=none", "ckpt={bad}/corrupt.ckpt", "data.path={bad}/dm_unknown_id"],
     r"error: ckpt: {bad}/corrupt\.ckpt is not a readable RetrievalModule checkpoint \(UnpicklingError: .+\)", ["{tmp}/run/metrics.json"]),
    ("retrieval-match-missing-ckpt", "retrieval.match", [*TOOL, "ckpt={tmp}/none.ckpt", "input={bad}/shopee_good.csv"], r"error: ckpt: no checkpoint file at {tmp}/none\.ckpt", []),
    ("retrieval-match-missing-reranker", "retrieval.match", [*TOOL, "ckpt={bad}/corrupt.ckpt", "input={bad}/shopee_good.csv", "reranker={tmp}/none.ckpt"],
     r"error: reranker: no checkpoint file at {tmp}/none\.ckpt", []),
    ("retrieval-match-corrupt-reranker", "retrieval.match", [*TOOL, "ckpt={bad}/corrupt.ckpt", "input={bad}/shopee_good.csv", "reranker={bad}/corrupt.ckpt"],
     r"error: reranker: {bad}/corrupt\.ckpt is not a readable RerankerModule checkpoint \(UnpicklingError: .+\)", []),
    ("retrieval-index-corrupt-ckpt", "retrieval.index", [*TOOL, "ckpt={bad}/corrupt.ckpt"],
     r"error: ckpt: {bad}/corrupt\.ckpt is not a readable RetrievalModule checkpoint \(UnpicklingError: .+\)", []),
]

# Cases that fail only after a complete training run: its checkpoints stay (resumable), metrics.json must not appear.
FAILS_AFTER_TRAINING = {"toy-unknown-optimized-metric"}

TABLES = {"toy": TOY_CASES, "textcls": TEXTCLS_CASES, "vlm": VLM_CASES, "retrieval": RETRIEVAL_CASES}
CASES = [case for table in TABLES.values() for case in table]
