// Second oracle for tests/test_tokenizer_bpe.c: the npm package tiktoken (JS/WASM bindings of OpenAI's
// Rust tiktoken), run by Debian's nodejs on the tokenizer.model that llama3_tok.mjs wrote.
//   node tiktoken_tok.mjs PKG_DIR DIR
// PKG_DIR: node_modules/tiktoken (installed into the build tree by llama3_tok.sh); DIR: llama3_tok.mjs's
// output. Builds a Tiktoken encoder from DIR/tokenizer.model (128,000 ranks), Llama 3's pre-tokenizer
// pattern and the 256 special tokens with Meta's Llama 3 names (as data/tokenizer_bpe.c gives them), and
// writes DIR/tiktoken_ids.jsonl: one line per line of DIR/docs.jsonl, the same order,
// {"ids": [128000, ...encode(text, "all"), 128001]}. Prints how many documents the two oracles agree on,
// and the first few where they do not.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [pkgDir, dir] = process.argv.slice(2);
const { Tiktoken } = createRequire(import.meta.url)(path.resolve(pkgDir));

const NBASE = 128000, NSPECIAL = 256;
const specials = {};
const named = { 0: '<|begin_of_text|>', 1: '<|end_of_text|>', 6: '<|start_header_id|>', 7: '<|end_header_id|>', 9: '<|eot_id|>' };
const reserved = { 2: 0, 3: 1, 4: 2, 5: 3, 8: 4 };
for (let i = 0; i < NSPECIAL; i++)
  specials[named[i] ?? `<|reserved_special_token_${i < 10 ? reserved[i] : i - 5}|>`] = NBASE + i;
// Meta's llama/tokenizer.py (Llama 3)
const PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const ranks = fs.readFileSync(path.join(dir, 'tokenizer.model'), 'utf8');
const enc = new Tiktoken(ranks, specials, PATTERN);
const BOS = specials['<|begin_of_text|>'], EOS = specials['<|end_of_text|>'];

const lines = fs.readFileSync(path.join(dir, 'docs.jsonl'), 'utf8').split('\n').filter((l) => l.length > 0);
const out = [];
let agree = 0, withSpecial = 0;
const differ = [];
const t0 = process.hrtime.bigint();
lines.forEach((line, i) => {
  const d = JSON.parse(line);
  const ids = [BOS, ...enc.encode(d.text, 'all'), EOS];
  out.push(JSON.stringify({ ids }));
  if (d.text.includes('<|')) withSpecial++;
  const n = Math.min(ids.length, d.ids.length);
  let k = 0;
  while (k < n && ids[k] === d.ids[k]) k++;
  if (k === n && ids.length === d.ids.length) agree++;
  else differ.push(`document ${i} (${d.lang}): first difference at id ${k} (tiktoken ${ids[k]}, llama3-tokenizer-js ${d.ids[k]}; ` +
                   `${ids.length} vs ${d.ids.length} ids): ${JSON.stringify(d.text.slice(0, 80))}`);
});
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
enc.free();
const tmp = path.join(dir, 'tiktoken_ids.jsonl.tmp');
fs.writeFileSync(tmp, out.join('\n') + '\n');
fs.renameSync(tmp, path.join(dir, 'tiktoken_ids.jsonl'));
console.log(`tiktoken oracle: ${lines.length} documents (${withSpecial} with special tokens) in ${secs.toFixed(2)} s; ` +
            `agrees with llama3-tokenizer-js on ${agree}, differs on ${differ.length}`);
for (const s of differ.slice(0, 10)) console.log('  ' + s);
