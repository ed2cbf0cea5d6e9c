"""The embedded synthetic car-news set: Chinese headlines / short texts with the team's long-tail tags.

Each article is either "other" news (83.2%: general domains plus car news that is *not* new-car news, such as
maintenance, traffic, used cars, sales figures, which makes the gate non-trivial) or new-car news carrying one
or more of the 12 sub-tags with the shares measured by the team (新车解析 14.8% ... 新车到店 0.13% of all
articles). Tags co-occur the way they do in real headlines (上市 with 报价 and 解析, 谍照 with 配置曝光): a
positive article draws each tag with probability share/0.168, so an article has ~2 tags on average. Texts
are built from per-tag phrase templates around real makes and models; phrases of related tags share words
(实车 / 实拍 / 曝光 / 图) and a few percent of articles get label noise or character noise.

Deterministic: the same ``seed`` and ``n`` give the same articles, byte for byte.

``python -m textcls.synth --out DIR [--n 12000] [--seed 0]`` writes NeuralClassifier JSONL
(``train/val/test.jsonl``) and ``taxonomy.txt``.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from common.data.splits import random_split
from common.errors import UserError
from common.io import check_writable, write_jsonl
from textcls.taxonomy import GATE, GATE_SHARE, OTHER, SEP, SUBTAG_SHARES, Taxonomy

CARS: dict[str, list[str]] = {
    "比亚迪": ["汉EV", "秦PLUS", "海豹", "宋PLUS DM-i", "唐DM-p", "元PLUS", "海鸥"],
    "吉利": ["星越L", "博越L", "帝豪", "银河L7", "星瑞"],
    "长安": ["CS75 PLUS", "UNI-K", "逸动", "深蓝SL03", "UNI-V"],
    "哈弗": ["H6", "大狗", "枭龙MAX"],
    "坦克": ["300", "500", "400 Hi4-T"],
    "蔚来": ["ET5", "ES6", "ET7", "EC6"],
    "小鹏": ["P7i", "G9", "G6", "X9"],
    "理想": ["L7", "L8", "L9", "MEGA"],
    "特斯拉": ["Model 3", "Model Y", "Model S"],
    "大众": ["帕萨特", "迈腾", "ID.4 CROZZ", "途观L", "朗逸"],
    "丰田": ["凯美瑞", "卡罗拉", "RAV4荣放", "汉兰达", "bZ3"],
    "本田": ["雅阁", "思域", "CR-V", "皓影"],
    "日产": ["轩逸", "天籁", "奇骏"],
    "宝马": ["3系", "5系", "X3", "i3"],
    "奔驰": ["C级", "E级", "GLC", "EQE"],
    "奥迪": ["A4L", "A6L", "Q5L", "Q4 e-tron"],
    "别克": ["君越", "GL8", "昂科威Plus"],
    "奇瑞": ["瑞虎8", "艾瑞泽5", "瑞虎7 PLUS"],
    "领克": ["03", "06", "09"],
    "红旗": ["H9", "HS5", "E-HS9"],
    "埃安": ["AION S", "AION Y", "昊铂GT"],
    "极氪": ["001", "007", "X"],
    "问界": ["M5", "M7", "M9"],
    "小米": ["SU7"],
    "凯迪拉克": ["CT5", "XT5", "LYRIQ"],
    "沃尔沃": ["XC60", "S90", "EX30"],
    "马自达": ["CX-5", "阿特兹"],
    "现代": ["伊兰特", "途胜L"],
    "起亚": ["K5", "狮铂拓界"],
    "五菱": ["宏光MINIEV", "缤果"],
}
FEATURES = [
    "贯穿式尾灯", "溜背造型", "15.6英寸中控屏", "激光雷达", "高阶智驾", "800V高压平台", "空气悬架",
    "换电", "1.5T发动机", "2.0T发动机", "双电机四驱", "CLTC续航700km", "隐藏式门把手", "HUD抬头显示",
    "座椅按摩", "全景天幕", "8155芯片", "后轮转向", "封闭式前脸", "双联屏", "零重力座椅",
]
SHOWS = ["北京车展", "上海车展", "广州车展", "成都车展", "日内瓦车展", "品牌之夜", "线上发布会"]
CITIES = ["北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "重庆", "西安", "南京", "郑州", "长沙"]
PLACES = ["黑河冬测", "吐鲁番高温测试", "纽北赛道", "城市道路", "高原路段", "某测试场"]

# Per-tag phrase templates. {car} = make + model, {m} = model only, other slots filled below.
TAG_PHRASES: dict[str, list[str]] = {
    "谍照": [
        "{car}最新路试谍照曝光", "{car}伪装车谍照流出", "谍照：{car}现身{place}", "{car}无伪装谍照，疑似{year}款",
        "抓拍{car}测试车谍照", "{car}改款谍照首曝",
    ],
    "实车曝光": [
        "{car}实车曝光", "{car}实车现身{city}街头", "{car}量产实车图曝光", "实拍{car}实车，{feature}清晰可见",
        "{car}实车首次曝光",
    ],
    "配置曝光": [
        "{car}配置曝光", "{car}配置表流出", "{car}详细配置曝光，全系标配{feature}", "{car}配置信息提前曝光",
        "{m}各版本配置曝光",
    ],
    "申报图": [
        "工信部申报图曝光：{car}", "{car}申报图曝光", "{car}工信部申报信息公布", "{car}申报图亮相，搭载{feature}",
        "新一批工信部目录：{car}申报",
    ],
    "预热": [
        "{car}官方预热", "{car}官方预告，{date}正式亮相", "{car}官宣预热 倒计时{n}天", "{car}发布预热海报",
        "{car}预热视频发布，{feature}抢先看",
    ],
    "新车上市": [
        "{car}正式上市", "{car}今日上市，共推出{n}款车型", "{car}上市 售价{price}万元起", "{car}新款上市",
        "{car}在{city}上市",
    ],
    "预售": [
        "{car}开启预售", "{car}预售价{price}万起", "{car}正式开启预售，订金{dep}元", "{car}预售价公布",
        "{car}开启盲订，预售{price}万",
    ],
    "发布亮相": [
        "{car}正式发布", "{car}{show}首发亮相", "{car}全球首秀", "{car}亮相{show}", "{car}正式亮相",
    ],
    "新车官图": [
        "{car}官图发布", "{car}官图公布，{feature}设计抢眼", "官图：{car}外观内饰首次公开", "{car}官方图片发布",
        "{car}发布官图",
    ],
    "新车报价": [
        "{car}报价{price}万元起", "{car}最新报价，{city}优惠{disc}万", "{car}各配置价格汇总", "{car}售价{price}-{price2}万",
        "{car}价格公布",
    ],
    "新车到店": [
        "{car}已到店", "{car}抵达{city}4S店", "{car}到店实拍", "{car}现已到店接受预订", "{car}陆续到店",
    ],
    "新车解析": [
        "哪款最值得买", "深度解析{feature}", "新车解析", "{m}买哪款？推荐{trim}", "详解{feature}与{feature2}",
        "值不值得买", "全面解读{m}", "购车手册", "看点解析",
    ],
}

# "Other" news. Car-related but not new-car news comes first: it is the gate's hard negatives.
OTHER_PHRASES: dict[str, list[str]] = {
    "用车": [
        "{car}保养一次多少钱？车主说出实话", "{car}开了三年，说说真实油耗", "冬天车窗起雾怎么办", "{car}车主吐槽异响问题",
        "轮胎多久换一次才合适", "{car}召回{n}辆，涉及{feature}",
    ],
    "交通": [
        "{city}高速发生多车追尾事故", "{city}出台新规 电动车上牌有变化", "驾照新规{date}起实施", "{city}限行政策调整",
    ],
    "二手车": ["{car}二手车保值率如何", "二手{car}值得入手吗", "{city}二手车市场回暖", "{car}上市三年，二手价跌了多少"],
    "车市": ["{make}{n}月销量同比增长{n}%", "{make}发布年度财报", "新能源车渗透率突破{n}%", "{make}宣布降价促销，最高优惠{disc}万",
           "{car}官方辟谣：并无改款计划", "{car}车主口碑调查，值不值得买", "{make}高管：新车将在明年发布"],
    "体育": ["{team}主场{n}比{n2}战胜对手", "国足公布{date}集训名单", "NBA季后赛：{star}砍下{n}分", "CBA总决赛第{n}场今晚开打"],
    "财经": ["A股三大指数集体收涨", "央行宣布降准0.25个百分点", "{city}楼市新政出台", "人民币汇率企稳回升", "一季度GDP同比增长{n}%"],
    "科技": ["手机新品发布，搭载{chip}芯片", "{brand}发布大模型，性能提升{n}%", "国产芯片迎来新突破", "5G用户突破{n}亿"],
    "娱乐": ["{star}新剧定档{date}", "电影票房突破{n}亿", "{star}现身机场，状态很好", "综艺节目收视率创新高"],
    "旅游": ["{city}这些景点免费开放", "五一出游，{city}人气最旺", "{city}美食攻略来了"],
    "教育": ["{year}年高考报名人数公布", "{city}中考政策调整", "考研国家线发布"],
    "房产": ["{city}二手房挂牌量上升", "{city}新盘开盘即售罄", "房贷利率再下调"],
    "军事": ["我国新型驱逐舰下水", "某部开展实战化训练", "航母编队远海训练"],
}
TEAMS = ["广州队", "山东泰山", "上海申花", "北京国安", "浙江队"]
STARS = ["詹姆斯", "库里", "易建联", "刘德华", "杨幂", "周杰伦"]
CHIPS = ["骁龙8", "天玑9300", "麒麟9000S"]
BRANDS = ["华为", "小米", "百度", "阿里"]
TRIMS = ["次顶配", "入门版", "长续航版", "性能版", "中配"]
CONNECT = ["，", "，", "！", " ", "；", "｜"]
TAILS = ["", "", "", "，网友：真香", "，你会买吗？", "，详情看这里", "。", "！"]


@dataclass(frozen=True)
class Doc:
    text: str
    labels: tuple[str, ...]  # NeuralClassifier style: "新车资讯--预热"; ("其他",) for none


def _fill(rng: random.Random, template: str, make: str, model: str) -> str:
    p = rng.randint(6, 40) + rng.choice([0, 0.98, 0.58, 0.28])
    values = {
        "car": f"{make}{model}" if rng.random() < 0.8 else f"全新{make}{model}",
        "m": model,
        "make": make,
        "feature": rng.choice(FEATURES),
        "feature2": rng.choice(FEATURES),
        "city": rng.choice(CITIES),
        "place": rng.choice(PLACES),
        "show": rng.choice(SHOWS),
        "year": rng.choice(["2024", "2025", "2026"]),
        "date": f"{rng.randint(1, 12)}月{rng.randint(1, 28)}日",
        "n": rng.randint(2, 30),
        "n2": rng.randint(0, 5),
        "price": f"{p:g}",
        "price2": f"{p + rng.randint(2, 8):g}",
        "disc": rng.choice(["0.5", "1", "1.5", "2", "3"]),
        "dep": rng.choice(["999", "2000", "5000"]),
        "trim": rng.choice(TRIMS),
        "team": rng.choice(TEAMS),
        "star": rng.choice(STARS),
        "chip": rng.choice(CHIPS),
        "brand": rng.choice(BRANDS),
    }
    return template.format(**values)


def _noise(rng: random.Random, text: str, rate: float) -> str:
    """Drop, duplicate or swap a character now and then (typos, OCR-ish noise)."""
    if rng.random() >= rate or len(text) < 6:
        return text
    chars = list(text)
    i = rng.randrange(len(chars) - 1)
    op = rng.choice(["drop", "dup", "swap"])
    if op == "drop":
        del chars[i]
    elif op == "dup":
        chars.insert(i, chars[i])
    else:
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def _tags(rng: random.Random) -> list[str]:
    while True:
        tags = [t for t, share in SUBTAG_SHARES.items() if rng.random() < share / GATE_SHARE]
        if tags:
            return tags


def _positive(rng: random.Random) -> tuple[str, list[str]]:
    make = rng.choice(list(CARS))
    model = rng.choice(CARS[make])
    tags = _tags(rng)
    order = [t for t in tags if t != "新车解析"]
    rng.shuffle(order)
    parts = [_fill(rng, rng.choice(TAG_PHRASES[t]), make, model) for t in order]
    if "新车解析" in tags:
        phrase = _fill(rng, rng.choice(TAG_PHRASES["新车解析"]), make, model)
        if not parts:  # an analysis piece needs its car
            phrase = f"{make}{model}" + rng.choice(["", "：", " "]) + phrase
        parts.append(phrase)
    text = parts[0] + "".join(rng.choice(CONNECT) + p for p in parts[1:]) + rng.choice(TAILS)
    return text, tags


def _negative(rng: random.Random) -> str:
    domain = rng.choices(list(OTHER_PHRASES), weights=[3, 2, 1, 2] + [1] * (len(OTHER_PHRASES) - 4))[0]
    make = rng.choice(list(CARS))
    text = _fill(rng, rng.choice(OTHER_PHRASES[domain]), make, rng.choice(CARS[make]))
    if rng.random() < 0.3:  # a second clause from any other domain
        other = rng.choice(list(OTHER_PHRASES))
        text += rng.choice(CONNECT) + _fill(rng, rng.choice(OTHER_PHRASES[other]), make, rng.choice(CARS[make]))
    return text + rng.choice(TAILS)


def generate(n: int = 12000, seed: int = 0, label_noise: float = 0.01, char_noise: float = 0.05) -> list[Doc]:
    """``n`` articles, deterministic in ``seed``; shares follow :data:`textcls.taxonomy.SUBTAG_SHARES`."""
    from tqdm import tqdm

    rng = random.Random(seed)
    docs = []
    for _ in tqdm(range(n), desc="synthetic car news", disable=n < 20000, leave=False):
        if rng.random() < GATE_SHARE:
            text, tags = _positive(rng)
            if rng.random() < label_noise and len(tags) > 1:  # an annotator missed a tag
                tags.remove(rng.choice(tags))
            labels = tuple(f"{GATE}{SEP}{t}" for t in sorted(tags, key=list(SUBTAG_SHARES).index))
        else:
            text = _negative(rng)
            labels = (OTHER,)
        docs.append(Doc(_noise(rng, text, char_noise), labels))
    return docs


def to_record(doc: Doc) -> dict:
    return {"text": doc.text, "doc_label": list(doc.labels)}


def write_split(out: str, n: int = 12000, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> dict[str, str]:
    """Write ``train/val/test.jsonl`` and ``taxonomy.txt`` under ``out``; returns the paths."""


    docs = generate(n, seed)
    parts = random_split(len(docs), fractions, seed)
    paths = {}
    for name, idx in zip(("train", "val", "test"), parts, strict=True):
        paths[name] = str(write_jsonl(Path(out) / f"{name}.jsonl", (to_record(docs[i]) for i in idx)))
    Taxonomy.car_news().write(Path(out) / "taxonomy.txt")
    paths["taxonomy"] = str(Path(out) / "taxonomy.txt")
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)


    try:
        check_writable(Path(args.out) / "train.jsonl", "--out")  # before generating anything
    except UserError as e:
        ap.exit(2, f"error: {e}\n")
    for name, path in write_split(args.out, args.n, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
