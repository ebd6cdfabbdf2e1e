#!/usr/bin/env python3
"""Writes testdata/golden/texts.jsonl, the text set every golden is computed on.

Run from anywhere with any Python 3 (standard library only):
    python3 xtask/golden/make_texts.py
The Debian FAQ texts are taken as they stand from testdata/debian-faq-ko/; everything else is
spelled out below with explicit escapes so that invisible characters are unambiguous. The output
is deterministic; changing it invalidates every golden (texts_sha256 in each meta.json).
"""
import json
import pathlib
import unicodedata

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAQ = ROOT / "testdata" / "debian-faq-ko"
OUT = ROOT / "testdata" / "golden" / "texts.jsonl"


def load(name):
    with open(FAQ / name, encoding="utf-8") as f:
        return {d["_id"]: d["text"] for d in map(json.loads, f)}


queries = load("queries.jsonl")
corpus = load("corpus.jsonl")

LONG_EN = " ".join(
    [
        "A sentence embedding model turns a piece of text into a fixed-size vector of numbers,",
        "chosen so that texts with similar meaning end up close to each other.",
        "Retrieval systems use these vectors to find the passages that answer a question:",
        "every passage in a collection is embedded once, ahead of time, and stored in an index;",
        "when a question arrives it is embedded with the same model, and the passages whose vectors",
        "have the highest cosine similarity to the question's vector are returned first.",
        "Models of the E5 family are trained with short prefixes that tell them which side of the",
        "search a text is on, so a question is written as 'query: how do I install Debian' and a",
        "document as 'passage: Debian can be installed from a USB stick'.",
        "Forgetting the prefix does not make the model fail loudly; it only makes the results",
        "somewhat worse, which is exactly the kind of mistake that goes unnoticed for months.",
        "Before the encoder sees any text, a tokenizer cuts it into pieces from a fixed vocabulary.",
        "The XLM-RoBERTa tokenizer is a SentencePiece unigram model with about a quarter of a million",
        "pieces covering roughly a hundred languages; it first normalizes the text with a character",
        "map derived from NFKC, replaces spaces with a visible marker, and then picks the most",
        "probable segmentation of every word with the Viterbi algorithm.",
        "Characters it has never seen become a single unknown token, and runs of them are fused.",
        "The encoder itself is a stack of identical layers.",
        "Each layer lets every token attend to every other token, mixes the result through a small",
        "feed-forward network with a GELU activation, and normalizes it with a layer norm after adding",
        "the residual connection.",
        "A base-sized model has twelve such layers and a large one has twenty-four, with a hidden",
        "width of 384, 768 or 1024 numbers per token depending on the size.",
        "Sentence-transformers then pools the token vectors into one vector per text, usually by",
        "averaging them over the attention mask, and may normalize the result to unit length so that",
        "a dot product equals the cosine similarity.",
        "Because the encoder only has position embeddings for a limited number of tokens, long",
        "documents are cut: anything after the 512th token, counting the special tokens at both ends,",
        "is silently dropped, which is why retrieval systems split long documents into chunks that",
        "overlap a little, embed each chunk separately, and remember which document it came from.",
        "Reimplementing all of this in another language is straightforward in outline and full of",
        "traps in detail: the exact form of the GELU, the epsilon of the layer norm, the offset of",
        "the position ids in RoBERTa models, the order of truncation and special tokens, whether the",
        "prompt's tokens are part of the mean, and a dozen whitespace rules in the tokenizer.",
        "The only reliable way to get them right is to compare every intermediate result against the",
        "reference implementation on texts chosen to hit each of those corners, and to keep those",
        "comparisons running for as long as the code is changed.",
        "Numbers that agree to five decimal places on a hundred carefully chosen texts are worth more",
        "than any amount of reasoning about why the code ought to be correct.",
        "Speed comes afterwards: batching texts of similar length together, packing them without",
        "padding, multiplying matrices in cache-sized blocks, and using the vector instructions the",
        "processor actually has, checked at run time rather than assumed at compile time.",
    ]
)

TEXTS = [
    # Korean questions from the Debian FAQ set, as they stand.
    ("ko-q1.1", queries["q1.1"]),
    ("ko-q1.4", queries["q1.4"]),
    ("ko-q1.5", queries["q1.5"]),
    ("ko-q2.2", queries["q2.2"]),
    ("ko-q2.4", queries["q2.4"]),
    ("ko-q4.5", queries["q4.5"]),
    ("ko-q5.6", queries["q5.6"]),
    ("ko-q5.12", queries["q5.12"]),
    ("ko-q6.3", queries["q6.3"]),
    # Korean passages (answers), as they stand: newlines inside; d1.7 holds U+115F.
    ("ko-d1.7", corpus["d1.7"]),
    ("ko-d2.4", corpus["d2.4"]),
    ("ko-d5.6", corpus["d5.6"]),
    # English.
    ("en-hello", "Hello world"),
    ("en-question", "How do I install Debian from a USB stick?"),
    ("en-q7.7", queries["q7.7"]),
    ("en-sentence", "The quick brown fox jumps over the lazy dog, doesn't it? It's 3.14% faster."),
    # Mixed scripts: Korean + English + Hanja + Japanese + digits.
    ("mixed-scripts", "데비안(Debian)은 自由 소프트웨어입니다. 日本語では「フリーソフトウェア」と言います。 2024년 3월 15일"),
    ("mixed-address", "서울特別市 中區 세종대로 110 (Seoul City Hall) 東京都 とうきょう 03-1234-5678"),
    # Emoji: ZWJ family, flags, skin tones, variation selectors.
    (
        "emoji-family",
        "가족 \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 과 함께 "
        "\U0001F1F0\U0001F1F7 \U0001F1EF\U0001F1F5 여행 \U0001F44D\U0001F3FD!",
    ),
    (
        "emoji-mixed",
        "\U0001F469\U0001F3FB\u200D\U0001F4BB 코딩 중… \u2764\uFE0F\u200D\U0001F525 "
        "great job \U0001F389\U0001F389\U0001F389 ㅋㅋㅋ",
    ),
    # NFD (decomposed) Hangul: conjoining jamo instead of precomposed syllables.
    ("nfd-hangul", unicodedata.normalize("NFD", "한국어 자연어 처리는 재미있습니다")),
    # Fullwidth Latin, digits and punctuation, ideographic space.
    ("fullwidth", "ＡＢＣ\u3000１２３ Ｄｅｂｉａｎ\u3000ＧＮＵ／Ｌｉｎｕｘ！？"),
    # Whitespace inside: tabs, newlines, repeated spaces.
    ("ws-inner", "탭\t문자와\n줄바꿈   그리고    여러 공백\t\t이 있는  문장"),
    # Leading and trailing whitespace.
    ("ws-outer", "   \t 앞뒤에 공백이 있는 질문입니까?  \n "),
    # Whitespace only, the empty string, one character.
    ("ws-only", " \t\n  \u3000 "),
    ("empty", ""),
    ("single-char", "가"),
    # Compatibility jamo (internet Korean), NBSP, zero-width space, combining accent, U+00AD.
    ("jamo-compat", "ㅋㅋㅋ ㅎㅎ ㅠㅠ 진짜?? ㄱㅅ"),
    ("misc-unicode", "cafe\u0301 na\u00efve\u00a0nbsp zero\u200bwidth soft\u00adhyphen \u2460\u2461 \u00bd km\u00b2"),
    # Special-token strings written literally in the text (added tokens match in raw text).
    ("special-literal", "질문 <s> 답변 </s> 그리고 <mask> 또는 <unk><pad> 끝 <Q>질문<P>"),
    # Runs of punctuation and symbols.
    ("punct-run", "와!!!!!!!! 정말???? ...... ---- ~~~~ ※※ ㅡㅡ;;"),
    # A URL, a shell command, a version number.
    ("url-code", "https://www.debian.org/CD/netinst/ 참조 — `apt-get install -y python3` (v3.11.2)"),
    # A text of about a hundred tokens (a hidden-state row).
    ("ko-d6.3", corpus["d6.3"]),
    # Far longer than 512 tokens.
    ("long-ko-concat", "\n\n".join(corpus[k] for k in ["d7.1", "d7.3", "d7.4"])),
    ("long-ko-d3.1", corpus["d3.1"]),
    ("long-en", LONG_EN),
]


def main():
    ids = [i for i, _ in TEXTS]
    assert len(ids) == len(set(ids)), "duplicate ids"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for i, t in TEXTS:
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
    print(f"wrote {len(TEXTS)} texts to {OUT}")


if __name__ == "__main__":
    main()
