// Oracle for tests/test_tokenizer_bpe.c: the npm package llama3-tokenizer-js, which ships Meta's Llama 3
// vocabulary and merges, run by Debian's nodejs.
//   node llama3_tok.mjs PKG_DIR CORPUS_DIR OUT_DIR
// PKG_DIR: node_modules/llama3-tokenizer-js (installed into the build tree by llama3_tok.sh);
// CORPUS_DIR: `llamac prep --demo-corpus` output (nine languages from Debian's fortune packages).
// Writes OUT_DIR/tokenizer.model (tiktoken format: base64 bytes, space, rank, one token a line; the
// 128,000 ordinary tokens), OUT_DIR/tokenizer.json (Hugging Face format: byte-level vocab, merges in
// priority order, the 256 added special tokens, ignore_merges as Llama 3's has it), and
// OUT_DIR/docs.jsonl: {"lang", "text", "ids"} per document, ids = encode(text) with BOS and EOS.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkgDir, corpusDir, outDir] = process.argv.slice(2);
const mod = await import(pathToFileURL(path.join(pkgDir, 'bundle', 'llama3-tokenizer-with-baked-data.js')).href);
const tok = mod.default;
fs.mkdirSync(outDir, { recursive: true });

// GPT-2's byte <-> unicode mapping
const b2u = [], u2b = new Map();
{
  let n = 0;
  for (let c = 0; c < 256; c++) {
    const printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
    b2u[c] = printable ? c : 256 + n++;
    u2b.set(b2u[c], c);
  }
}
const NBASE = 128000;
const tokenBytes = (s) => Buffer.from(Array.from(s, (ch) => {
  const b = u2b.get(ch.codePointAt(0));
  if (b === undefined) throw new Error(`token ${JSON.stringify(s)} is not byte-level`);
  return b;
}));

// tiktoken tokenizer.model
const lines = [];
for (let id = 0; id < NBASE; id++) lines.push(tokenBytes(tok.vocabById[id]).toString('base64') + ' ' + id);
fs.writeFileSync(path.join(outDir, 'tokenizer.model'), lines.join('\n') + '\n');

// tokenizer.json
const vocab = {};
for (let id = 0; id < NBASE; id++) vocab[tok.vocabById[id]] = id;
const merges = [...tok.merges.entries()].sort((a, b) => a[1] - b[1]).map((e) => e[0]);
const added = [];
for (let id = NBASE; id < tok.vocabById.length; id++)
  added.push({ id, content: tok.vocabById[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
const PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const tj = {
  version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
  pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: PATTERN }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
  post_processor: null, decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
           fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges },
};
fs.writeFileSync(path.join(outDir, 'tokenizer.json'), JSON.stringify(tj));

// Documents: every language of the demo corpus, then other scripts and special tokens
let seed = 12345;
const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
const pick = (a) => a[Math.floor(rand() * a.length)];
const docs = [];
for (const lang of ['en', 'de', 'ru', 'bg', 'es', 'it', 'pl', 'cs', 'pt']) {
  const f = path.join(corpusDir, lang + '.txt');
  if (!fs.existsSync(f)) continue;
  const all = fs.readFileSync(f, 'utf8').split(/\n%\n/).filter((d) => d.trim().length > 0);
  const want = 1150, step = Math.max(1, Math.floor(all.length / want));
  for (let i = 0, k = 0; i < all.length && k < want; i += step, k++) docs.push({ lang, text: all[i] });
}
const frags = [
  '北京是中华人民共和国的首都。', '我喜欢学习新的语言，也喜欢编程。', '東京は日本の首都です。', 'ひらがなとカタカナ、そして漢字。',
  '서울은 대한민국의 수도입니다.', '한국어 문장을 토큰화합니다.', 'مرحبا بالعالم، هذه جملة عربية.', 'اللغة العربية جميلة جدا',
  'שלום עולם, זה משפט בעברית.', 'नमस्ते दुनिया, यह हिंदी वाक्य है।', 'สวัสดีชาวโลก นี่คือประโยคภาษาไทย', 'Γειά σου κόσμε, αυτή είναι μια πρόταση.',
  'გამარჯობა მსოფლიო', 'Բարեւ աշխարհ', 'Привет, мир! Это «тест» — с тире.', 'Ελληνικά: αβγδεζηθ ΑΒΓΔ',
  '😀😃😄 emoji 🎉🚀 and ZWJ 👩‍💻 flags 🇩🇪🇫🇷', '∑ x² + √y ≈ π ∞ ≠ ≤ ≥', 'Tiếng Việt có dấu: đường phố Hà Nội', 'Türkçe: İstanbul, ığüşöç',
  "I'm sure you'll see they've said it's fine; we'd go. DON'T SHOUT, He'LL know", '  leading and trailing spaces   ',
  'tabs\tand\t\ttabs', 'line one\r\nline two\r\n\r\n', '\n\n\n', '     \n   \n', 'numbers 1234567890 3.14159 1,000,000 42nd 007',
  'def f(x):\n    return x**2  # square\n', 'for (int i = 0; i < n; i++) { a[i] += b[i]; }', '<html><body class="x">Hi &amp; bye</body></html>',
  'https://example.com/path?q=1&r=2#frag', 'e-mail: someone@example.org', '$$$ ??? !!! ... --- ***', 'naïve café résumé coöperate',
  'ﬁ ligature, full‑width ＡＢＣ１２３, ½ ¼ ¾', 'a\u00a0non-breaking\u2009thin\u3000ideographic space', 'ǅ ǈ Ǳ ß ẞ İ ı ſ K Å',
];
const specials = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'];
for (let i = 0; i < 1500; i++) {
  let t = '';
  const n = 1 + Math.floor(rand() * 6);
  for (let j = 0; j < n; j++) {
    t += pick(frags);
    const r = rand();
    if (r < 0.15) t += pick(specials);
    else if (r < 0.45) t += ' ';
    else if (r < 0.6) t += '\n';
  }
  docs.push({ lang: 'mix', text: t });
}
docs.push({ lang: 'chat', text: '<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>' });
docs.push({ lang: 'en', text: 'Hello world!' });

const out = fs.openSync(path.join(outDir, 'docs.jsonl'), 'w');
for (const d of docs) fs.writeSync(out, JSON.stringify({ lang: d.lang, text: d.text, ids: tok.encode(d.text) }) + '\n');
fs.closeSync(out);
console.log(`llama3 oracle: ${docs.length} documents, ${NBASE} tokens + ${added.length} specials, ${merges.length} merges -> ${outDir}`);
