"""The fast rule-based default extractor (English and Chinese, no model).

It runs at ingest speed: entities from capitalised phrases plus small gazetteers (English)
or jieba part-of-speech tags (Chinese), dates from :mod:`timeexpr`, and a relation for each pair of
neighbouring entities in a sentence, labelled by the normalised phrase (English) or verbs (Chinese)
between them. A few trigger phrases map to canonical, functional relations ('chief executive of',
'headquartered in') so that later facts can close earlier ones.

The extraction interface and driver (:mod:`chronorag.graph.extraction`) are re-exported here, so
``chronorag.graph.extract`` names everything an extractor's caller needs.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate

from chronorag.graph.extraction import (
    EntityMention,
    Extraction,
    Extractor,
    FactDraft,
    extract_chunks,
    runs_in_processes,
    sentence_time,
    split_sentences,
)
from chronorag.graph.timeexpr import DateMention, find_dates

__all__ = [
    "EntityMention",
    "Extraction",
    "Extractor",
    "FactDraft",
    "RuleExtractor",
    "extract_chunks",
    "runs_in_processes",
    "sentence_time",
    "split_sentences",
]

_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")


# -------------------------------------------------------------------- English
_ORG_SUFFIX = {
    "inc", "inc.", "corp", "corp.", "corporation", "ltd", "ltd.", "llc", "plc", "co", "co.", "company",
    "group", "holdings", "bank", "energy", "motors", "systems", "technologies", "technology", "labs",
    "partners", "capital", "airlines", "airways", "pharmaceuticals", "pharma", "foods", "industries",
    "networks", "media", "insurance", "solutions", "logistics", "robotics", "semiconductor",
    "semiconductors", "bancorp", "fund", "agency", "ministry", "university", "institute",
    "association", "council", "commission", "authority", "committee", "exchange", "dynamics",
    "electric", "telecom", "software", "mining", "motors", "financial", "ventures", "bio", "biotech",
    "therapeutics", "analytics", "power", "materials", "chemicals", "steel", "retail", "brands",
}
_ORG_PREFIX = {"bank", "ministry", "university", "department", "bureau", "federal", "national", "central"}
_TITLES = {
    "chief", "executive", "officer", "ceo", "cfo", "coo", "cto", "chairman", "chairwoman", "chair",
    "president", "vice", "director", "minister", "secretary", "governor", "mr", "mrs", "ms", "dr",
    "prof", "sir", "senator", "managing", "general", "manager", "founder", "co-founder", "head",
    "spokesperson", "spokesman", "spokeswoman", "analyst", "chief executive", "interim", "acting",
    "new", "former", "outgoing", "incoming", "financial", "operating", "board", "mr.", "mrs.", "ms.", "dr.",
}
_TITLE_BREAK = {
    "ceo", "cfo", "coo", "cto", "chief", "chairman", "chairwoman", "president", "minister", "secretary",
    "spokesperson", "spokesman", "spokeswoman", "director", "mr", "mrs", "ms", "dr",
}
_HONORIFIC = {"mr", "mrs", "ms", "dr", "prof", "sir", "mr.", "mrs.", "ms.", "dr.", "prof."}
_PLACES = {
    "china", "beijing", "shanghai", "shenzhen", "hong kong", "japan", "tokyo", "germany", "berlin",
    "france", "paris", "london", "britain", "uk", "united kingdom", "united states", "us", "u.s.",
    "usa", "new york", "washington", "california", "texas", "chicago", "boston", "seattle", "denver",
    "austin", "atlanta", "dallas", "houston", "miami", "san francisco", "los angeles", "toronto",
    "singapore", "india", "mumbai", "sydney", "canada", "europe", "asia", "africa", "russia", "brazil",
    "mexico", "korea", "seoul", "italy", "spain", "madrid", "zurich", "amsterdam", "dublin", "munich",
    "frankfurt", "taiwan", "vietnam", "indonesia", "australia", "phoenix", "portland", "detroit",
    "pittsburgh", "minneapolis", "charlotte", "nashville", "raleigh", "oslo", "stockholm", "vienna",
}
_STOP_CAPS = {
    "the", "a", "an", "in", "on", "at", "after", "before", "when", "while", "this", "that", "these",
    "those", "its", "his", "her", "their", "our", "we", "it", "he", "she", "they", "i", "but", "and",
    "or", "as", "for", "by", "from", "with", "of", "to", "since", "during", "until", "last", "next",
    "according", "meanwhile", "however", "also", "shares", "revenue", "sales", "analysts", "there",
    "today", "yesterday", "tomorrow", "q1", "q2", "q3", "q4", "fy", "h1", "h2", "earlier", "later",
    "under", "following", "despite", "although", "if", "so", "then", "now", "still", "both", "all",
    "some", "many", "most", "each", "every", "one", "two", "three", "no", "not", "what", "who",
    "which", "where", "why", "how", "is", "was", "were", "be", "has", "have", "had", "do", "did",
    "will", "would", "can", "could", "should", "may", "might", "must", "other", "such", "only",
    "about", "over", "into", "through", "new", "first", "second", "third", "fourth", "record",
}
_MONTH_WORDS = {
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
}
_CONNECT = {"of", "&", "and", "de", "for", "the"}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9&'’.]*(?:-(?!based\b)[A-Za-z0-9&'’.]+)*|\$?\d[\d,.]*|[^\sA-Za-z0-9]")
_MONEY = re.compile(
    r"(?:US|RMB|HK|A|C)?[$€£¥]\s?\d[\d,]*(?:\.\d+)?(?:\s*(?:billion|million|thousand|bn|mn|m|b|k)\b)?"
    r"|\b\d[\d,]*(?:\.\d+)?\s*(?:billion|million)\s+(?:dollars|yuan|euros|pounds|usd|rmb)\b",
    re.IGNORECASE,
)

_EN_FILLER = {
    "the", "a", "an", "its", "his", "her", "their", "has", "have", "had", "was", "were", "is", "are",
    "be", "been", "being", "will", "would", "as", "new", "also", "on", "that", "which", "who", "it",
    "this", "said", "says", "officially", "formally", "today", "yesterday", "recently", "just",
    "later", "then", "by", "and", "to", "of", "in", "at", "for", "with", "from",
}
_KEEP_PREP = {"to", "of", "in", "at", "from", "with", "for", "by"}

_CEO = re.compile(r"chief executive|\bceo\b|\bhelm\b|top job|top executive|to lead\b|\bled by\b|\bleads?\b|\bboss\b|\brun(?:s|ning)?\b", re.I)
_HQ = re.compile(r"headquarter|head office|\bhq\b|based in|relocat|move[sd]? (?:its |their )?(?:base|offices?|main office|corporate)", re.I)
_REVENUE = re.compile(r"revenue|\bsales\b|turnover|top line|took in|brought in", re.I)
_PROFIT = re.compile(r"net income|net profit|\bprofit\b|\bearned\b|\bearnings\b", re.I)
_ENDED = re.compile(r"\b(?:former|outgoing|ex-|previous|predecessor|stepped down|step down|resign|depart|left|retir|ousted|fired|until)\w*", re.I)
_SUCCEED = re.compile(r"\b(?:succeed|replac)\w*\s*$", re.I)
_SUCCESSION = re.compile(r"\b(?:succeed|replac)\w*", re.I)
_ORG_FIRST = re.compile(r"^\s*(?:'s|’s)|\b(?:named|appoint\w*|hire[sd]?|hiring|picked|tapped|chose|choos\w*|select\w*|promot\w*|elevat\w*|install\w*|name[sd]?|put)\b", re.I)


@dataclass
class _Ent:
    name: str
    type: str
    start: int
    end: int
    first_tok: int = 0  # Chinese: the tokens [first_tok, end_tok) the entity spans
    end_tok: int = 0


class RuleExtractor:
    """Fast default extractor: gazetteers, capitalisation, jieba POS tags and date rules."""

    name = "rules-v2"  # bump the version when the output changes: a new name re-extracts every chunk
    parallel_safe = True

    def __init__(self, max_relation_gap_words: int = 12, zh_all_sentences: bool = False, zh_lead_sentences: int = 2) -> None:
        """Chinese text is POS-tagged only in its first ``zh_lead_sentences`` sentences and in
        sentences holding a date or a relation trigger (tagging dominates the cost), unless
        ``zh_all_sentences``."""
        self.max_gap = max_relation_gap_words
        self.zh_all_sentences = zh_all_sentences
        self.zh_lead_sentences = zh_lead_sentences
        self._tagger = None

    # ------------------------------------------------------------ public
    def extract(self, text: str, published_at: datetime | None) -> Extraction:
        if not text or not text.strip():
            return Extraction()
        chinese = sum(map(len, _CJK_RUN.findall(text[:400]))) > 20  # > 20 CJK characters up front
        dates = find_dates(text, published_at)
        if chinese:
            return self._extract_zh(text, published_at, dates)
        return self._extract_en(text, published_at, dates)

    # ----------------------------------------------------------- English
    def _en_entities(self, text: str, s0: int, s1: int, date_spans: list[tuple[int, int]], mid_caps: set[str]) -> list[_Ent]:
        sent = text[s0:s1]
        toks = [(m.group(0), m.start() + s0, m.end() + s0) for m in _WORD.finditer(sent)]
        ents: list[_Ent] = []
        for m in _MONEY.finditer(sent):
            ents.append(_Ent(m.group(0).strip(), "VALUE", m.start() + s0, m.end() + s0))
        i, n = 0, len(toks)
        while i < n:
            w, ws, we = toks[i]
            if not (w[0].isupper() and w.lower().rstrip(".") not in _MONTH_WORDS) or any(a <= ws < b for a, b in date_spans):
                i += 1
                continue
            j = i + 1
            while j < n:
                t = toks[j][0]
                if t.lower().rstrip(".") in _TITLE_BREAK and w.lower().rstrip(".") not in _TITLE_BREAK:
                    break  # 'Acme Corp CEO Jane Doe' is two entities
                if t[0].isupper() and t.lower() not in _MONTH_WORDS:
                    j += 1
                elif t.lower() in _CONNECT and j + 1 < n and toks[j + 1][0][0].isupper() and t.lower() != "the":
                    j += 2
                else:
                    break
            phrase = toks[i:j]
            i = j
            lowered = [p[0].lower().rstrip(".,") for p in phrase]
            # strip leading stopwords and titles; remember a title/honorific to type persons
            titled = False
            while phrase and (lowered[0] in _STOP_CAPS or lowered[0] in _TITLES or lowered[0] in _CONNECT):
                titled = titled or lowered[0] in _TITLES
                phrase, lowered = phrase[1:], lowered[1:]
            while phrase and (lowered[-1] in _TITLES and lowered[-1] not in _ORG_SUFFIX or lowered[-1] in _CONNECT):
                phrase, lowered = phrase[:-1], lowered[:-1]
            if not phrase:
                continue
            name = text[phrase[0][1] : phrase[-1][2]].rstrip(".,'’")
            if name.endswith(("'s", "’s")):
                name = name[:-2]
            if len(name) < 2:
                continue
            at_start = not sent[: phrase[0][1] - s0].strip(" \"“'(")
            if at_start and len(phrase) == 1 and name not in mid_caps and lowered[-1] not in _ORG_SUFFIX and lowered[-1] not in _PLACES:
                continue
            key = name.lower()
            if key in _PLACES:
                typ = "LOC"
            elif lowered[-1] in _ORG_SUFFIX or lowered[0] in _ORG_PREFIX:
                typ = "ORG"
            elif titled or (toks[i - len(phrase) - 1][0].lower() in _HONORIFIC if i - len(phrase) - 1 >= 0 else False):
                typ = "PER"
            elif 2 <= len(phrase) <= 3 and all(p[0].rstrip(".").isalpha() for p in phrase):
                typ = "PER"
            else:
                typ = "ENT"
            ents.append(_Ent(name, typ, phrase[0][1], phrase[0][1] + len(name)))
        ents.sort(key=lambda e: e.start)
        return ents

    def _extract_en(self, text: str, published_at: datetime | None, dates: list[DateMention]) -> Extraction:
        out = Extraction(dates=dates)
        date_spans = [(d.start, d.end) for d in dates]
        mid_caps = set(re.findall(r"(?<=[a-z,;] )([A-Z][\w&.-]+)", text))
        for s0, s1 in split_sentences(text, chinese=False):
            ents = self._en_entities(text, s0, s1, date_spans, mid_caps)
            out.entities.extend(EntityMention(e.name, e.type, e.start, e.end) for e in ents)
            if len(ents) < 2:
                continue
            time, source = sentence_time(dates, s0, s1, published_at)
            desc = text[s0:s1].strip()[:400]
            out.facts.extend(self._en_relations(text, ents, s1, time, source, desc, date_spans))
        return out

    def _en_relations(self, text, ents, s1, time, source, desc, date_spans) -> list[FactDraft]:
        facts: list[FactDraft] = []
        for i in range(len(ents) - 1):
            a, b = ents[i], ents[i + 1]
            between = text[a.end : b.start]
            if len(between.split()) > self.max_gap or ";" in between:
                continue
            before = text[max(0, a.start - 40) : a.start]
            after = text[b.end : min(s1, b.end + 60)]
            ctx = between + " " + after.split(",")[0]
            if _SUCCEED.search(before) and i > 0:
                continue  # 'X succeeded <a> as ...': <a> is the predecessor, handled from X below
            rel, subj, obj, conf = None, a, b, 0.0
            if _SUCCEED.search(between) and i + 2 < len(ents):
                # 'X succeeded Y as chief executive of Z'
                c = ents[i + 2]
                tail = text[b.end : c.start]
                if _CEO.search(tail) and c.type != "PER":
                    facts.append(FactDraft(a.name, "PER", "chief executive of", c.name, c.type, time, source, desc, 0.7))
                    facts.append(FactDraft(b.name, "PER", "former chief executive of", c.name, c.type, time, source, desc, 0.6))
                    continue
            if a.type == "PER" and b.type == "PER":
                rel = None
            else:
                rel, subj, obj, conf = self._canonical(a, b, between, ctx, before)
            if rel is None:
                rel = self._generic_label(between, date_spans, a.end)
                subj, obj, conf = a, b, 0.4
            if not rel or subj.name == obj.name:
                continue
            facts.append(FactDraft(subj.name, subj.type, rel, obj.name, obj.type, time, source, desc, conf))
        return facts

    @staticmethod
    def _canonical(a: _Ent, b: _Ent, between: str, ctx: str, before: str):
        if b.type == "VALUE" and a.type != "VALUE":
            if _REVENUE.search(ctx) or _REVENUE.search(before[-25:]):
                return "revenue", a, b, 0.7
            if _PROFIT.search(ctx):
                return "net income", a, b, 0.7
            return None, a, b, 0.0
        if a.type == "VALUE" or b.type == "VALUE" or _SUCCESSION.search(between):
            return None, a, b, 0.0
        if _HQ.search(ctx) or _HQ.search(before[-20:] + between):
            org, place = (b, a) if between.strip() in ("-based", "based") else (a, b)
            if org.type == "LOC" and place.type != "LOC":
                org, place = place, org
            return "headquartered in", org, place, 0.7
        if _CEO.search(between) or (_CEO.search(ctx) and len(between.split()) <= 6):
            if a.type == "PER" and b.type != "PER":
                person, org = a, b
            elif b.type == "PER" and a.type != "PER":
                person, org = b, a
            elif _ORG_FIRST.search(between):
                person, org = b, a
            else:
                person, org = a, b
            ended = _ENDED.search(between) or _ENDED.search(before[-20:])
            return ("former chief executive of" if ended else "chief executive of"), person, org, 0.7
        return None, a, b, 0.0

    @staticmethod
    def _generic_label(between: str, date_spans, offset: int) -> str:
        words = re.findall(r"[A-Za-z][A-Za-z'-]*", between.lower())
        words = [w for w in words if w not in _EN_FILLER or w in _KEEP_PREP]
        while words and words[0] in _KEEP_PREP:
            words = words[1:]
        content = [w for w in words if w not in _KEEP_PREP]
        if not content or len(content) > 5:
            return ""
        return " ".join(words[:6])

    def warm_up(self) -> None:
        """Load the segmenter's dictionary now (before forking workers that should share it)."""
        self._pos_tagger()("预热词典")

    # ----------------------------------------------------------- Chinese
    def _pos_tagger(self):
        """(word, POS flag) pairs of a sentence, dictionary-only (no HMM): rjieba when installed,
        else jieba.posseg (see ``_tag_rjieba``)."""
        if self._tagger is None:
            try:
                import rjieba  # noqa: F401

                self._tagger = _tag_rjieba
            except ImportError:
                self._tagger = _tag_jieba
        return self._tagger

    def _extract_zh(self, text: str, published_at: datetime | None, dates: list[DateMention]) -> Extraction:
        out = Extraction(dates=dates)
        tag = self._pos_tagger()
        starts = [d.start for d in dates]
        for n_sent, (s0, s1) in enumerate(split_sentences(text, chinese=True)):
            sent = text[s0:s1]
            if not self.zh_all_sentences and n_sent >= self.zh_lead_sentences:
                # tagging dominates the cost: only sentences that can carry a timed fact
                d = bisect_left(starts, s0)  # dates come sorted by start
                if not (d < len(starts) and starts[d] < s1) and not _ZH_TRIGGER.search(sent):
                    continue
            tagged = tag(sent)
            offsets = accumulate([len(w) for w, _ in tagged], initial=s0)
            toks: list[tuple[str, str, int]] = [(w, f, p) for (w, f), p in zip(tagged, offsets)]
            ents = _zh_entities(toks)
            out.entities.extend(EntityMention(e.name, e.type, e.start, e.end) for e in ents)
            if len(ents) < 2:
                continue
            time, source = sentence_time(dates, s0, s1, published_at)
            desc = sent.strip()[:300]
            for a, b in zip(ents, ents[1:]):
                if b.first_tok - a.end_tok > 10:
                    continue
                between = toks[a.end_tok : b.first_tok]
                if any(t[0] in "，,：" for t in between):
                    continue
                rel, subj, obj = _zh_relation(a, b, between, toks)
                if rel and subj.name != obj.name:
                    facts_conf = 0.7 if rel in ("chief executive of", "headquartered in") else 0.4
                    out.facts.append(FactDraft(subj.name, subj.type, rel, obj.name, obj.type, time, source, desc, facts_conf))
        return out


def _tag_rjieba(sent: str) -> list[tuple[str, str]]:
    """rjieba is jieba-rs: the same dictionary and algorithm in Rust, far faster than jieba.posseg.
    The two agree word for word; they differ only in tagging digits ('m' vs 'eng'), which no rule reads."""
    import rjieba

    return rjieba.tag(sent, False)


def _tag_jieba(sent: str) -> list[tuple[str, str]]:
    import jieba
    import jieba.posseg as pseg

    jieba.setLogLevel(60)
    return [(p.word, p.flag) for p in pseg.cut(sent, HMM=False)]


_ZH_TRIGGER = re.compile(r"任命|出任|担任|当选|接任|卸任|辞去|离任|总部|首席执行官|总裁|董事长|行长|收购|并购|签署|签约|宣布|成立|营收|净利润|发布会|会见|会谈|召开|举行")
_ZH_TYPE = {"nr": "PER", "nrfg": "PER", "nrt": "PER", "ns": "LOC", "nt": "ORG", "nz": "ENT"}
_ZH_ORG_END = re.compile(r"(?:公司|集团|银行|部|委员会|委|大学|学院|协会|医院|研究院|研究所|局|厅|法院|政府|中心|基金会|交易所|组织|联盟|署|办公室)$")


_SURNAMES = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁"
    "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃戴莫孔汤"
)
_NOT_NAME = set("的了在是和与及等将对为也就都中上下年月日时个这那其之而或被把从向到于以所有不没说称表示会要能可已并又再还着过来去里后前内外第各每某该本此人我你他她们")


def _surname_person(toks: list[tuple[str, str, int]], i: int) -> int:
    """Tokens a name spans when jieba (HMM off) split an unknown name into single characters, else 0."""
    if toks[i][0] not in _SURNAMES:
        return 0
    j = i + 1
    while j < len(toks) and j - i < 3 and len(toks[j][0]) == 1 and "\u4e00" <= toks[j][0] <= "\u9fff" and toks[j][0] not in _NOT_NAME:
        j += 1
    return j - i if j - i >= 2 else 0


def _zh_entities(toks: list[tuple[str, str, int]]) -> list[_Ent]:
    ents: list[_Ent] = []
    n = len(toks)
    nxt = 0  # the first token not yet inside an entity
    # only tokens that can start an entity: a typed noun, or a surname starting a split name
    for i in [k for k, t in enumerate(toks) if t[1] in _ZH_TYPE or t[0] in _SURNAMES]:
        if i < nxt:
            continue
        w, flag, start = toks[i]
        if w in _SURNAMES:
            span = _surname_person(toks, i)
            if span:
                name = "".join(t[0] for t in toks[i : i + span])
                ents.append(_Ent(name, "PER", start, start + len(name), i, i + span))
                nxt = i + span
                continue
        typ = _ZH_TYPE.get(flag)
        if typ is None or len(w) < 2 and typ != "PER":
            continue
        # 'ns/nt/nz + nouns ... + 公司/部/银行' -> one organisation
        j, name, cand, i_end = i + 1, w, w, i + 1
        while j < n and j - i < 4 and toks[j][1][:1] == "n" and toks[j][1] != "nr":
            cand += toks[j][0]
            j += 1
            if _ZH_ORG_END.search(cand):
                name, typ, i_end = cand, "ORG", j
                break
        if typ == "PER" and len(name) < 2:
            continue
        if typ == "ENT" and _ZH_ORG_END.search(name):
            typ = "ORG"
        ents.append(_Ent(name, typ, start, start + len(name), i, i_end))
        nxt = i_end
    return ents


_ZH_CEO = re.compile(r"首席执行官|总裁|CEO|行长|总经理")
_ZH_HQ = re.compile(r"总部")
_ZH_ENDED = re.compile(r"前任|原|卸任|辞去|离任")


def _zh_relation(a: _Ent, b: _Ent, between: list[tuple[str, str, int]], toks) -> tuple[str, _Ent, _Ent]:
    words = "".join(t[0] for t in between)
    after = "".join(t[0] for t in toks[b.end_tok : b.end_tok + 8] if t[2] < b.end + 8)
    if _ZH_HQ.search(words + after):
        org, place = (a, b) if b.type == "LOC" or a.type != "LOC" else (b, a)
        return "headquartered in", org, place
    if _ZH_CEO.search(words + after):
        person, org = (a, b) if a.type == "PER" or b.type != "PER" else (b, a)
        if _ZH_ENDED.search(words + after):
            return "former chief executive of", person, org
        return "chief executive of", person, org
    verbs = [t[0] for t in between if t[1].startswith("v")]
    if not verbs:
        return "", a, b
    return "".join(verbs[:2]), a, b
