#!/usr/bin/env python3
"""Tokenizer fixtures: captions tokenized by open_clip 3.3.0's SimpleTokenizer.

    /opt/tcvenv/bin/python scripts/fixtures_tokenizer.py

writes tests/fixtures/tokenizer/
  cases.tsv     one case a line: caption UTF-8 bytes as hex, a tab, the ids
                from SOT to EOT (context 77, no padding) separated by spaces
  contexts.tsv  context, tab, caption hex, tab, ids: other context lengths
  lower.tsv     code point, tab, its str.lower() (hex), for every code point
                that str.lower() changes (except U+0130 and U+03A3)
  mojibake.tsv  caption hex, tab, open_clip ids, tab, the ids open_clip gives
                when ftfy's fix_encoding (mojibake repair) is off: the cases
                where the C tokenizer (which has no mojibake repair) differs
and prints the mojibake captions as C string literals for the test's list.
Captions are hand-written edge cases plus programmatic ones (fixed seed).
Versions used: open_clip_torch 3.3.0, ftfy 6.3.1, regex 2026.11.19, Python 3.11.7.
"""
import os
import random
import sys

import ftfy
import open_clip
from open_clip.tokenizer import SimpleTokenizer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer")

HAND = [
    # the reference vectors of docs/design.md §9
    "a photo of a cat.", "a photo of a dog", "Hello, World! 123", "a  diagram &amp; a   chart",
    "it's a photo of the café", "",
    # whitespace
    " ", "   ", "\t\n\r", "\u3000", "\xa0\xa0", "\u2028\u2029", "\x1c\x1d\x1e\x1f", "a\x1cb\x1fc",
    "a\u180eb", "a\u200bb", "a\u2000b\u2001c\u2002d\u200ae", "a\u202fb\u205fc\u1680d", "a\x85b", "a\x0bb\x0cc",
    "  leading and trailing  ", "tabs\tand\nnewlines\r\nand\rcarriage", "line one\u2028line two\u2029three",
    # ascii, punctuation, digits
    "A PHOTO OF A CAT", "Don't stop; we'll see: it's ok, I'm here, they're gone, you've won, he'd go",
    "DON'T WE'LL IT'S I'M THEY'RE YOU'VE HE'D", "'s 't 're 've 'm 'll 'd", "''s'", "it'S a TesT",
    "1234567890", "3.14159265358979", "phone: +1 (555) 010-9999", "$19.99!!!", "!!!???...",
    "!", "!!", "!?", "a!b", "#hashtag @user http://example.com/path?q=1&r=2", "e-mail: x_y.z@ex.org",
    "C++ & C# are <languages>", "50% off -- today only!!!", "~`!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/",
    "x" * 300, "ab" * 200, "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    # special-token strings
    "<start_of_text>", "<end_of_text>", "<start_of_text>a photo<end_of_text>", "<START_OF_TEXT> hi",
    "x<end_of_text>y", "?<start_of_text>", "<|startoftext|>a<|endoftext|>", "<start_of_text",
    "<\u017ftart_of_text>", "'\u017f", "it'\u017f", "<end_of_text><end_of_text><end_of_text>",
    # html entities: named, numeric, double-escaped, legacy without ';'
    "&amp;", "&amp;amp;", "&amp;amp;amp;", "&amp;amp;amp;amp;amp;", "&lt;b&gt;bold&lt;/b&gt;", "&quot;hi&quot;",
    "&#39;quoted&#39;", "&#x27;hex&#X27;", "&#8217;", "&#x2019;", "caf&eacute;", "caf&eacute", "CAF&EACUTE;",
    "P&EACUTE;REZ", "BUNDESSTRA&SZLIG;E", "&ntilde; &Ntilde; &NTILDE; &nTILDE;", "&hellip;", "&mdash;&ndash;",
    "&nbsp;x&nbsp;", "&nbspx", "&copy2024", "&copy;2024", "&reg", "AT&T", "AT&amp;T", "&ampx", "&ampamp;",
    "&notit;", "&notin;", "&not", "&not;", "this&not that", "&lt3", "&LT;&GT;", "&AMP", "&frac12;", "&frac12",
    "&frac34x", "&unknown;", "&unknownentity", "&;", "&", "&&", "& amp;", "&#;", "&#x;", "&#xg;", "&#12a;",
    "&#0;", "&#1;", "&#9;", "&#10;", "&#11;", "&#12;", "&#13;", "&#27;", "&#31;", "&#32;", "&#59;", "&#127;",
    "&#128;", "&#129;", "&#x80;", "&#x9f;", "&#x8d;", "&#150;", "&#160;", "&#173;", "&#xad;", "&#55296;",
    "&#xd800;", "&#xDFFF;", "&#x10FFFF;", "&#x110000;", "&#1114112;", "&#99999999999999999999;",
    "&#xffffffffffffffffffff;", "&#0000000065;", "&#x000041;", "&#65", "&#x41", "&#x41g", "&#65535;", "&#xfffe;",
    "&#xFDD0;", "&#x1F600;", "&#128512;", "&#x1F1FA;&#x1F1F8;", "&#9731;", "&#x2603;", "&#8364;", "&euro;",
    "&amp;#39;", "&amp;quot;", "&amp;lt;3", "&#38;amp;", "&#x26;#x26;", "&amp;#x26;amp;", "&Aacute;&aacute;",
    "&Abreve;", "&Jscr;ohn &HilbertSpace;ancock", "&checkmark;", "&NotNestedGreaterGreater;", "&nGt;",
    "&acE;", "&bne;", "&thickspace;", "&ThickSpace;", "&nvlt;", "&fjlig;",
    "&abcdefghijklmnopqrstuvwxyzabcdefghijkl;", "&abcdefghijklmnopqrstuvwxy;", "&abcdefghijklmnopqrstuvwx;",
    "&ampabcdefghijklmnopqrstuvwxyzabcdefghij", "&amp\tx", "&amp<x", "&amp&amp", "&amp#x", "&am", "&a",
    "&#x26;", "&\u00e9t\u00e9;", "&amp\u00e9", "&ampé;",
    # '<' switches ftfy's html unescaping off from that line on
    "a &amp; b <i>c</i> &amp; d", "<b>&amp;</b>", "&amp;\n<b>x</b> &amp;\n&amp;", "x &amp; y\nz &eacute; <\n&amp;",
    "no tag &amp;amp; here\nsecond &amp; line", "1 < 2 &amp; 3 > 2", "&lt;not a tag&gt; &amp;",
    # ftfy: c1 controls, ligatures, widths, quotes, line breaks, controls, terminal escapes
    "\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f", "\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f",
    "price \x80 5", "it\x92s here", "\x93quoted\x94", "a\x85b",
    "\ufb01sh \ufb02ower \ufb00 \ufb03 \ufb04 \ufb05 \ufb06", "\u0132ssel \u0133s \u01c4 \u01c5 \u01c6 \u01c7 \u01c8 \u01c9 \u01ca \u01cb \u01cc \u01f1 \u01f2 \u01f3 \u0149",
    "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33", "\uff11\uff12\uff13\uff01\uff1f", "\uff35\uff80\uff70\uff9d",
    "\uff76\uff80\uff76\uff85 \uff8a\uff9e\uff8a\uff9f", "\uffe0\uffe1\uffe5\uffe6 \uffe8\uffee", "\uffa1\uffa4\uffc2",
    "\u201cquoted\u201d \u2018single\u2019 \u201alow\u201b \u201eGerman\u201c \u201f \u02bc", "don\u2019t", "DON\u2019T",
    "\u2019s \u2019t \u2019re", "\x00\x01\x02\x03\x04\x05\x06\x07\x08", "a\x00b", "a\x7fb", "a\x0eb\x1bc",
    "\ufeffBOM at start", "mid\ufeffdle", "\u206a\u206b\u206c\u206d\u206e\u206f", "\ufff9\ufffa\ufffb\ufffc\ufffd",
    "\x1b[31mred\x1b[0m text", "\x1b[1;32;40mgreen\x1b[m", "\x1b[;;mx", "\x1b[12", "\x1b[1;\u0663m arabic digit",
    "\x1b]0;title\x07", "\x1b\x01[31m", "\u200c\u200d\u200e\u200f\u202a\u202e", "\U000e0067\U000e0062",
    # NFC and combining marks
    "cafe\u0301", "A\u030angstrom", "\u212b \u2126 \u212a", "n\u0303", "\u1100\u1161\u11a8", "a\u0345b",
    "\u03b1\u0345", "x\u0345\u0345.", "\u0345", "i\u0307", "e\u0301\u0301\u0301", "\u0301start", "q\u0323\u0307",
    "\u00c5\u212b\u0041\u030a", "\u1e9b\u0323", "\u0958\u0959", "\uf900\uf901", "\u2163 \u2173 \u216b",
    # case mapping: Turkish dotted I, German sharp s, final sigma
    "\u0130STANBUL", "\u0130", "D\u0130YARBAKIR \u0131l\u0131k", "I \u0131 \u0130 i", "\u0130i\u0307",
    "STRASSE Stra\u00dfe \u1e9e \u00df", "MA\u1e9eE",
    "\u039f\u0394\u039f\u03a3", "\u03a3", "\u03a3\u03a3", "\u0391\u03a3", "\u0391\u03a3.", "\u0391\u03a3\u0391",
    "\u0391'\u03a3", "\u0391\u03a3'", "\u0391\u03a3\u0301", "1\u03a3", "\u0391\u03a31", "\u03a3\u0391\u03a3 \u03a3\u0391\u03a3",
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3", "\u0391\u00ad\u03a3", "\u0391\u03a3\u00ad", "\u0391\u03a3\u00adb",
    "\u0391:\u03a3", "a\u03a3", "\u0391\u0345\u03a3", "\u1f88\u1f89 \u1fbc", "\u0149 \u01f0 \u0390",
    "\u10a0\u10c5 \u13a0 \uab70", "\u2c00 \u2c2f", "\U00010400\U00010428", "\U0001e900",
    # scripts
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 Z\u00fcrich S\u00e3o Paulo \u00c5ngstr\u00f6m fa\u00e7ade jalape\u00f1o",
    "\u0152uvre \u0141\u00f3d\u017a Dvo\u0159\u00e1k \u015ei\u015fli", "\u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2 \u0391\u03b8\u03ae\u03bd\u03b1",
    "\u041c\u043e\u0441\u043a\u0432\u0430 \u041f\u0420\u0418\u0412\u0415\u0422 \u0401\u043b\u043a\u0430 \u0407\u0436\u0430\u043a",
    "\u6771\u4eac\u30bf\u30ef\u30fc", "\u732b\u306e\u5199\u771f", "\ud55c\uad6d\uc5b4 \uc0ac\uc9c4", "\u4e2d\u6587\uff0c\u6807\u70b9\u3002",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "\u0532\u0561\u0580\u0565\u0582", "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\u0663\u0664\u0665 \u0967\u0968 \u00b2\u00b3 \u00bd \u2460\u2461", "\u2211 \u222b \u221a2 \u2248 1.414", "\u20ac5 \u00a33 \u00a5100 \u20b9",
    # emoji
    "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f1fa\U0001f1f8 \U0001f1ef\U0001f1f5", "\U0001f3f3\ufe0f\u200d\U0001f308", "\u2764\ufe0f", "1\ufe0f\u20e3",
    "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f", "\u270c\U0001f3ff", "cat\U0001f431dog",
    "\U0001fae8 \U0001fa77", "\U0001f9d1\u200d\U0001f4bb",
    # code points the regex module classes differently from Unicode 14
    "a\U00031350b", "\U00031350\U00031351", "x\U00011f04y", "\U0001e4f0\U0001e4f1", "5\U0001e4f0", "\ua7cb\ua7cc",
    "z\u0c5c", "\U0001e030a",
    # mojibake (ftfy's fix_encoding repairs these; the C tokenizer does not)
    "caf\u00c3\u00a9", "The Mona Lisa doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t have eyebrows.",
    "\u00e2\u20ac\u0153Hello\u00e2\u20ac\x9d", "\u00c3\u00bcber", "sch\u00c3\u00b6n", "voil\u00c3\u00a0 le travail",
    "\u00c3 la mode", "\u00d0\u0178\u00d1\u20ac\u00d0\u00b8\u00d0\u00b2\u00d0\u00b5\u00d1\u201a",
    "\u00c3\u00a9t\u00c3\u00a9 \u00c3  Paris", "\u00e2\u02dc\u0192 snowman", "\u00f0\u0178\u02dc\u20ac emoji",
    "l'\u00c3\u00a9glise", "\u00e2\u20ac\u0153 like this \u00e2\u20ac\ufffd", "mixed caf\u00c3\u00a9 and caf\u00e9",
    "\u00c2\u00a3100", "10\u00c2\u00b0C", "\u00e2\u0153\u201d No problems", "&macr;\\_(\u00e3\x83\x84)_/&macr;",
    "Broken text&hellip; it&#x2019;s \ufb02ubberi\ufb01c!", "\u00c3\u0192\u00c2\u00a9", "\u00c3\u00a7a va",
    "Na\u00c3\u00afve", "\u00c3\u2030T\u00c3\u2030", "Sch\u00c3\u00b6ne Gr\u00c3\u00bc\u00c3\u0178e",
]

WORDS = ("a photo of the cat dog man woman child car tree house red blue green small large on in with at by "
         "under near beautiful old new city street beach mountain sunset night food pizza coffee people group "
         "two three playing running sitting standing black white yellow view close up portrait painting art "
         "vintage modern design logo icon vector illustration background texture pattern abstract").split()
FRAGMENTS = [
    "caf\u00e9", "na\u00efve", "r\u00e9sum\u00e9", "Z\u00fcrich", "\u00c5ngstr\u00f6m", "jalape\u00f1o", "Stra\u00dfe",
    "\u0130stanbul", "I\u011fd\u0131r", "\u039f\u0394\u039f\u03a3", "\u03c3\u03bf\u03c6\u03af\u03b1", "\u039b\u038c\u0393\u039f\u03a3",
    "\u041c\u043e\u0441\u043a\u0432\u0430", "\u041f\u0420\u0418\u0412\u0415\u0422", "\u6771\u4eac", "\u5199\u771f", "\ud55c\uad6d",
    "\u30ab\u30bf\u30ab\u30ca", "\uff76\uff80\uff76\uff85", "\uff26\uff35\uff2c\uff2c", "\uff11\uff12", "\ufb01ne", "\ufb02at",
    "\u201cquote\u201d", "\u2018it\u2019s\u2019", "don\u2019t", "&amp;", "&amp;amp;", "&lt;", "&gt;", "&quot;", "&#39;",
    "&#x2019;", "&eacute;", "&nbsp;", "&copy", "&hellip;", "&EACUTE;", "&#128;", "&#0;", "&#x1F600;", "&ampx",
    "\U0001f600", "\U0001f44d\U0001f3fe", "\U0001f469\u200d\U0001f52c", "\U0001f1e9\U0001f1ea", "\u2764\ufe0f",
    "e\u0301", "a\u0308", "o\u0302", "\u0345", "\u00ad", "\u200b", "\u200d", "\ufeff", "\x00", "\x07", "\x1b[1m",
    "\x80", "\x92", "\x85", "\x9d", "\u2028", "\r\n", "\r", "\t", "\n", "\u3000", "\xa0", "<b>", "</b>", "<",
    "<start_of_text>", "<end_of_text>", "'s", "'LL", "'Re", "'\u017f", "123", "\u0663", "\u00b2", "\u2167", "\u00bd",
    "$5.99", "50%", "#tag", "@user", "http://x.co/a?b=c&d=e", "...", "!!!", "--", "\u2014", "\u2026", "\u00a9",
    "\u2122", "\u00ae", "\u00b0C", "\u20ac", "\u03a3", "\u0391\u03a3",
    "\U00031350", "\U0001e4f0", "\ufb06", "\u01c6",
]
SEPARATORS = [" ", " ", " ", "", ", ", "  ", "\n", "\t", " - ", ". ", "&nbsp;", "\u00a0", "\u3000", "/", "_"]


def random_unicode(rng):
    """a random code point from a spread of blocks (assigned or not)"""
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x250, 0x36F), (0x370, 0x3FF), (0x400, 0x52F), (0x530, 0x8FF),
              (0x900, 0xDFF), (0xE00, 0xFFF), (0x1000, 0x1FFF), (0x2000, 0x2BFF), (0x2C00, 0x2E7F),
              (0x2E80, 0x33FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA000, 0xABFF), (0xAC00, 0xD7FF),
              (0xF900, 0xFFFD), (0x10000, 0x1FFFF), (0x20000, 0x2FFFF), (0x30000, 0x3FFFF), (0xE0000, 0xE01EF)]
    lo, hi = rng.choice(blocks)
    c = rng.randint(lo, hi)
    if 0xD800 <= c <= 0xDFFF:
        c = 0x41
    return chr(c)


def random_caption(rng, i):
    kind = i % 10
    parts = []
    if kind == 0:  # plain captions
        n = rng.randint(1, 20)
        parts = [rng.choice(WORDS) for _ in range(n)]
        s = " ".join(parts)
        return rng.choice([s, s.capitalize(), s.upper(), s.title(), s + ".", s + "!"])
    if kind == 1:  # long captions (well past 77 tokens)
        n = rng.randint(60, 250)
        return " ".join(rng.choice(WORDS + FRAGMENTS[:40]) for _ in range(n))
    if kind in (2, 3, 4):  # words mixed with fragments
        n = rng.randint(2, 14)
        out = []
        for _ in range(n):
            out.append(rng.choice(WORDS) if rng.random() < 0.5 else rng.choice(FRAGMENTS))
            out.append(rng.choice(SEPARATORS))
        s = "".join(out)
        return s.upper() if rng.random() < 0.15 else s
    if kind == 5:  # random code points
        n = rng.randint(1, 25)
        return "".join(random_unicode(rng) if rng.random() < 0.7 else rng.choice(" aeiou1.&;#") for _ in range(n))
    if kind == 6:  # entity soup
        n = rng.randint(1, 10)
        out = []
        for _ in range(n):
            r = rng.random()
            if r < 0.3:
                out.append("&" + rng.choice(["amp", "lt", "gt", "quot", "apos", "nbsp", "eacute", "EACUTE", "copy",
                                             "not", "notin", "frac12", "hellip", "AMP", "Auml", "szlig", "SZLIG",
                                             "ouml", "OUML", "ntilde", "NTILDE", "mdash", "rsquo", "bogus"])
                           + rng.choice([";", "", ";", "x", "amp;", " "]))
            elif r < 0.55:
                num = rng.choice([0, 9, 10, 13, 27, 39, 65, 128, 133, 150, 160, 255, 8217, 8364, 55296, 65534,
                                  0x1F600, 0x10FFFF, 0x110000, rng.randint(0, 0x2FFFF)])
                out.append(rng.choice(["&#%d" % num, "&#x%x" % num, "&#X%X" % num]) + rng.choice([";", "", ";;", "a"]))
            elif r < 0.7:
                out.append("&amp;" * rng.randint(1, 4) + rng.choice(["amp;", "lt;", "#39;", "eacute;", "x"]))
            else:
                out.append(rng.choice(WORDS))
            out.append(rng.choice(["", " ", " ", "\n", "<"] if rng.random() < 0.2 else [" ", ""]))
        return "".join(out)
    if kind == 7:  # controls and whitespace
        n = rng.randint(1, 12)
        pool = [chr(c) for c in list(range(0, 0x21)) + list(range(0x7F, 0xA1))] + [
            "\u2028", "\u2029", "\u200b", "\u200d", "\ufeff", "\u206a", "\ufffc", "\u2000", "\u2007", "\u202f",
            "\u205f", "\u3000", "\u1680", "\u180e", "\x1b[0m", "\x1b[31;1m"]
        return "".join(rng.choice(pool) if rng.random() < 0.5 else rng.choice(WORDS) for _ in range(n))
    if kind == 8:  # case mapping and sigma contexts
        letters = ["\u03a3", "\u0391", "\u039f", "\u03c3", "\u03c2", "'", ".", " ", "\u0301", "\u00ad", "1",
                   "\u0130", "I", "\u0131", "\u00df", "\u1e9e", "\u0345", "\u0307", "A", "\u01c5", "\u1f88", "\u2126"]
        return "".join(rng.choice(letters) for _ in range(rng.randint(1, 10)))
    # kind 9: emoji, CJK, scripts, widths
    pool = FRAGMENTS[11:30] + FRAGMENTS[41:46] + ["\U0001f3fb", "\U0001f3ff", "\u200d", "\ufe0f", "\U0001f1e8",
                                                 "\U0001f1f3", "\u4e00", "\u9fff", "\u3042", "\uac00",
                                                 "\u0e01", "\u0627", "\u05d0", "\u0915\u094d"]
    return "".join(rng.choice(pool) + rng.choice(["", " ", ""]) for _ in range(rng.randint(1, 10)))


def main():
    tok = SimpleTokenizer()
    assert open_clip.__version__ == "3.3.0", open_clip.__version__
    rng = random.Random(20240613)
    captions = list(HAND)
    for i in range(2300):
        captions.append(random_caption(rng, i))
    # one very long caption (ftfy and BPE run over all of it; 77 ids come out)
    captions.append(" ".join(rng.choice(WORDS + FRAGMENTS) for _ in range(4000)))
    seen = set()
    uniq = []
    for c in captions:
        if c not in seen:
            seen.add(c)
            uniq.append(c)
    captions = uniq

    real_fix_text = ftfy.fix_text

    def ids_for(text, context=77):
        row = tok([text], context_length=context)[0].tolist()
        enc = [tok.sot_token_id] + tok.encode(text) + [tok.eot_token_id]
        n = min(len(enc), context)
        want = enc[:n]
        want[-1] = tok.eot_token_id
        assert row[:n] == want and all(v == 0 for v in row[n:]), (text, row, want)
        return want

    def ids_without_mojibake_repair(text, context=77):
        ftfy.fix_text = lambda t: real_fix_text(t, fix_encoding=False)
        try:
            return ids_for(text, context)
        finally:
            ftfy.fix_text = real_fix_text

    os.makedirs(OUT, exist_ok=True)
    mojibake = []
    with open(os.path.join(OUT, "cases.tsv"), "w", encoding="ascii", newline="\n") as f:
        for c in captions:
            ids = ids_for(c)
            f.write("%s\t%s\n" % (c.encode("utf-8").hex(), " ".join(map(str, ids))))
            alt = ids_without_mojibake_repair(c)
            if alt != ids:
                mojibake.append((c, ids, alt))
    with open(os.path.join(OUT, "mojibake.tsv"), "w", encoding="ascii", newline="\n") as f:
        for c, ids, alt in mojibake:
            f.write("%s\t%s\t%s\n" % (c.encode("utf-8").hex(), " ".join(map(str, ids)), " ".join(map(str, alt))))
    ctx_cases = [c for c in captions if c not in {m[0] for m in mojibake}]
    with open(os.path.join(OUT, "contexts.tsv"), "w", encoding="ascii", newline="\n") as f:
        for i, c in enumerate(ctx_cases[::23]):
            for context in (1, 2, 3, 5, 16, 32, 200):
                ids = ids_for(c, context)
                f.write("%d\t%s\t%s\n" % (context, c.encode("utf-8").hex(), " ".join(map(str, ids))))

    # str.lower() of every code point it changes (one character each; the
    # final sigma and U+0130 -> 'i\u0307' are covered by cases.tsv)
    with open(os.path.join(OUT, "lower.tsv"), "w", encoding="ascii", newline="\n") as f:
        for c in range(0x110000):
            if 0xD800 <= c <= 0xDFFF or c in (0x130, 0x3A3):
                continue
            low = chr(c).lower()
            if low != chr(c):
                assert len(low) == 1, hex(c)
                f.write("%x\t%x\n" % (c, ord(low)))

    def c_literal(s):
        out = []
        for b in s.encode("utf-8"):
            out.append(chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\?' else "\\%03o" % b)
        return '"' + "".join(out) + '"'

    print("%d cases, %d mojibake divergences" % (len(captions), len(mojibake)), file=sys.stderr)
    for c, _, _ in mojibake:
        print("    %s," % c_literal(c))


if __name__ == "__main__":
    main()
