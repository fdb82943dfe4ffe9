#!/usr/bin/env bash
# The fine-tuning demo: take the pretraining demo's model (scripts/demo.sh, run first when runs/demo has
# no checkpoint), export it, and fine-tune it with LoRA on an instruction set built here from the manual
# pages of the installed commands: "What does the command X do?" -> the description on its NAME line.
# Every 10th command is held out of the data entirely; its answers are shown before and after.
#   demo/ft/base/        the exported pretrained model (Hugging Face layout)
#   demo/ft/*.jsonl      train.jsonl (prompt/response records), heldout.jsonl
#   demo/ft/data/        llamac prep --sft plain: shards with the loss mask (answers only)
#   runs/finetune/       the LoRA run: adapters-only checkpoints, metrics.jsonl, loss.png
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
llamac=build/llamac

[ -f runs/demo/ckpt/latest ] || bash scripts/demo.sh
mkdir -p demo/ft
$llamac export --ckpt runs/demo --out demo/ft/base --dtype f32

# NAME lines of section 1 man pages: "ls \- list directory contents" -> (ls, list directory contents);
# the generated per-subcommand pages of the Google Cloud SDK, when it is installed, are left out
mandir=/usr/share/man/man1
for f in $(ls "$mandir" | grep -v '^gcloud' | LC_ALL=C sort); do
  zcat -f "$mandir/$f" 2>/dev/null | awk -v file="$f" '
    /^\.SH +"?NAME"?/ { inname = 1; next }
    inname && /^\.(SH|SS)/ { exit }
    inname && !/^\./ && NF {
      gsub(/\\-/, "-"); gsub(/\\f[BIRP]/, ""); gsub(/\\\(em/, "-"); gsub(/\\/, "")
      n = index($0, " - "); if (n == 0) exit
      cmd = file; sub(/\.1[a-z]*(\.gz)?$/, "", cmd)
      desc = substr($0, n + 3); gsub(/^ +| +$/, "", desc); gsub(/"/, "", desc)
      if (cmd ~ /^[A-Za-z0-9._+-]+$/ && length(desc) > 3 && length(desc) <= 60 && desc ~ /^[ -~]+$/)
        printf "%s\t%s\n", cmd, desc
      exit }' || true  # awk leaves at the NAME line: zcat may die of SIGPIPE
done | awk -F'\t' '!seen[$1]++' > demo/ft/names.tsv
if [ "$(wc -l < demo/ft/names.tsv)" -lt 100 ]; then
  echo "finetune_demo: only $(wc -l < demo/ft/names.tsv) commands with a NAME line in $mandir (an image without" \
    "manual pages? install man-db and reinstall the packages, or remove dpkg's path-exclude for /usr/share/man)" >&2
  exit 1
fi
awk -F'\t' '{ rec = sprintf("{\"prompt\": \"What does the command %s do?\", \"response\": \"%s\"}", $1, $2)
  if (NR % 10 == 0) print rec > "demo/ft/heldout.jsonl"; else print rec > "demo/ft/train.jsonl" }' demo/ft/names.tsv
echo "instruction set: $(wc -l < demo/ft/train.jsonl) records to train on, $(wc -l < demo/ft/heldout.jsonl) held out (from $mandir)"

$llamac prep --out demo/ft/data --tokenizer demo/data/tokenizer.model --sft plain --val-fraction 0.05 \
  --input man:demo/ft/train.jsonl --quiet

rm -rf runs/finetune
$llamac train configs/runs/finetune.ini

# held-out questions, greedy answers of the pretrained model (before) and of the fine-tuned one (after)
questions=()
answers=()
while IFS= read -r line; do
  q=$(sed 's/.*"prompt": "\([^"]*\)".*/\1/' <<<"$line")
  a=$(sed 's/.*"response": "\([^"]*\)".*/\1/' <<<"$line")
  questions+=("$q")
  answers+=("$a")
done < <(head -n 8 demo/ft/heldout.jsonl)
prompts=()
for q in "${questions[@]}"; do prompts+=(--prompt $'### Instruction:\n'"$q"$'\n\n### Response:\n'); done
$llamac sample --ckpt runs/demo --temperature 0 --max-tokens 16 "${prompts[@]}" > demo/ft/before.txt
$llamac sample --ckpt runs/finetune --temperature 0 --max-tokens 16 "${prompts[@]}" > demo/ft/after.txt
echo
echo "Held-out questions (greedy answers; each is printed after its prompt):"
for i in "${!questions[@]}"; do
  echo "  Q: ${questions[$i]}"
  echo "     reference: ${answers[$i]}"
done
echo "--- before fine-tuning (runs/demo) ---"; cat demo/ft/before.txt
echo "--- after LoRA fine-tuning (runs/finetune) ---"; cat demo/ft/after.txt
echo
first=$(grep -m1 '"loss"' runs/finetune/metrics.jsonl | sed 's/.*"loss": \([0-9.]*\).*/\1/')
last=$(grep '"loss"' runs/finetune/metrics.jsonl | grep -v val_loss | tail -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
vfirst=$(grep -m1 '"val_loss"' runs/finetune/metrics.jsonl | sed 's/.*"val_loss": \([0-9.]*\).*/\1/')
vlast=$(grep '"val_loss"' runs/finetune/metrics.jsonl | tail -1 | sed 's/.*"val_loss": \([0-9.]*\).*/\1/')
printf "response-token loss: %.3f at step 1, %.3f at the end; validation (held-out records) %.3f -> %.3f\n" \
  "$first" "$last" "$vfirst" "$vlast"
echo "loss curves: runs/finetune/loss.png; adapters: runs/finetune/ckpt/ (llamac export --ckpt runs/finetune --lora peft)"
