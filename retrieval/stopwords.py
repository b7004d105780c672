"""Stop words for BM25 tokenisation: words too common to tell documents apart.

Kept short on purpose: BM25's IDF already discounts frequent words, so these lists only remove
function words that would otherwise bloat posting lists and add noise to short queries (question
words such as 多少 / 哪个 / what / which match nothing useful in a news article).
"""

from __future__ import annotations

ENGLISH_STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t d ll m re ve
    """.split()
)

CHINESE_STOP_WORDS: frozenset[str] = frozenset(
    """
    的 地 得 了 着 过 在 是 和 与 及 或 等 也 都 而 并 对 将 把 被 从 这 那 之 其 于 为 以 就 还 又 但
    如 所 由 向 到 让 给 啊 吧 呢 吗 么 哦 呀 嘛 呗 我 你 您 他 她 它 们 我们 你们 他们 她们 它们 咱们
    这个 那个 这些 那些 这样 那样 这里 那里 这种 那种 一个 一些 以及 但是 因为 所以 如果 虽然 而且
    并且 或者 然后 已经 可以 没有 不是 就是 还是 自己 什么 怎么 怎样 如何 为什么 哪 哪个 哪些 哪里
    多少 几 有 个 此 该 各 每 即 则 且 使 因 故 若 即使 以便 由于 对于 关于 至于 之后 之前 以后 以前
    其中 通过 进行 根据 按照 作为 同时 以上 以下 之一 各种 有关 相关 等等 其他 其它 另外
    """.split()
)
