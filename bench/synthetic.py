"""Words the benchmarks build synthetic corpora and queries from (English, then Chinese characters)."""

ENGLISH_WORDS = tuple(
    """
    river mountain history science energy market health school city music garden ocean
    bridge language library winter engine forest island medicine planet harvest railway painting
    theory protein climate harbour village orbit copper glacier economy festival journal crystal
    vaccine archive battery desert
    """.split()  # noqa: SIM905 - a word list reads better as text
)
CHINESE_CHARACTERS = tuple(
    "河流山脉历史科学能源市场健康学校城市音乐花园海洋桥梁语言图书馆冬天发动机森林岛屿医学"
)
