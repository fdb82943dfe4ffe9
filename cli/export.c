// llamac export --ckpt PATH|RUN_DIR --out DIR [--dtype bf16|f16|f32] [--max-shard-size 5GB]
// Writes a checkpoint as a complete Hugging Face Llama directory, for other tools or for
// `[model] init = hf:DIR`:
//   config.json              every field transformers' LlamaConfig reads, bos/eos_token_id from the tokenizer
//   model.safetensors        or, above --max-shard-size, model-NNNNN-of-MMMMM.safetensors and
//                            model.safetensors.index.json (model/hf.h, hf_save_opts)
//   generation_config.json   bos/eos ids (Llama 3: [<|end_of_text|>, <|eot_id|>]), max_length, and
//                            llamac sample's defaults (temperature 0.8, top_p 0.9)
//   the run's tokenizer      tokenizer.model (SentencePiece, or Llama 3's tiktoken file) or tokenizer.json
//                            (byte-level BPE in Hugging Face's format), as the run used it
//   tokenizer_config.json    tokenizer class, special tokens, model_max_length and the chat template
//                            (Llama 2 or Llama 3, as train/sample.h applies it) in Jinja
//   special_tokens_map.json  bos, eos (and unk for SentencePiece)
// A LoRA run's checkpoint (adapters only) is exported merged into its base weights (W + alpha/r B A), or
// with --lora peft as PEFT's adapter_model.safetensors + adapter_config.json (model/lora.h), beside the
// same tokenizer files.
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "core/fs.h"
#include "data/tokenizer.h"
#include "launch/grid.h"
#include "model/hf.h"
#include "model/safetensors.h"
#include "model/lora.h"
#include "train/lora_ckpt.h"
#include "train/sample.h"

// The templates chat_encode (train/sample.h) applies, in the Jinja transformers renders.
static const char *llama2_template =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content + ' ' + eos_token }}{% endif %}{% endfor %}";
static const char *llama3_template =
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// DIR/NAME holds j's text and a newline, published whole (core/fs.h, fs_write_atomic).
static int write_json(const char *dir, const char *name, cJSON *j) {
    char *path = fs_join(dir, name), *text = cJSON_Print(j);
    char *line = fs_printf("%s\n", text);
    int rc = fs_write_atomic(path, line, strlen(line));
    free(line);
    free(text);
    free(path);
    cJSON_Delete(j);
    return rc;
}

// "5GB", "200MB", "10KiB", "123" (bytes) -> bytes; 0 on a malformed size.
static uint64_t parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) return 0;
    const char *units[] = {"", "B", "KB", "MB", "GB", "KIB", "MIB", "GIB"};
    const double mult[] = {1, 1, 1e3, 1e6, 1e9, 1024.0, 1048576.0, 1073741824.0};
    char u[8] = {0};
    for (int i = 0; end[i] && i < 7; i++) u[i] = (char)(end[i] >= 'a' && end[i] <= 'z' ? end[i] - 32 : end[i]);
    if (strlen(end) > 3) return 0;
    for (int i = 0; i < 8; i++)
        if (!strcmp(u, units[i])) return (uint64_t)(v * mult[i]);
    return 0;
}

// The tokenizer files, tokenizer_config.json, special_tokens_map.json and generation_config.json.
static int export_tokenizer(const char *tok_path, const char *out, const struct llama_config *c,
                            struct hf_save_opts *o) {
    struct tokenizer *tok = NULL;
    if (tokenizer_load(&tok, tok_path) != 0) return -1;
    char head[1] = {0};
    FILE *f = fopen(tok_path, "rb");
    size_t got = f ? fread(head, 1, 1, f) : 0;
    if (f) fclose(f);
    int is_json = got == 1 && head[0] == '{', llama3 = chat_is_llama3(tok, NULL);
    int bpe = llama3 || is_json;
    char *to = fs_join(out, is_json ? "tokenizer.json" : "tokenizer.model");
    int rc = fs_copy_file(tok_path, to);
    free(to);
    const int bos = tokenizer_bos_id(tok), eos = tokenizer_eos_id(tok);
    o->bos_id = bos;
    o->eos_id = eos;
    if (rc == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "tokenizer_class", bpe ? "PreTrainedTokenizerFast" : "LlamaTokenizer");
        cJSON_AddStringToObject(j, "bos_token", tokenizer_piece(tok, bos));
        cJSON_AddStringToObject(j, "eos_token", tokenizer_piece(tok, eos));
        if (!bpe) cJSON_AddStringToObject(j, "unk_token", tokenizer_piece(tok, tokenizer_unk_id(tok)));
        cJSON_AddNullToObject(j, "pad_token");
        cJSON_AddBoolToObject(j, "add_bos_token", 1);
        cJSON_AddBoolToObject(j, "add_eos_token", 0);
        cJSON_AddBoolToObject(j, "clean_up_tokenization_spaces", 0);
        if (!bpe) cJSON_AddBoolToObject(j, "legacy", 1);
        cJSON_AddNumberToObject(j, "model_max_length", c->max_seq_len);
        cJSON_AddStringToObject(j, "chat_template", llama3 ? llama3_template : llama2_template);
        rc = write_json(out, "tokenizer_config.json", j);
    }
    if (rc == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "bos_token", tokenizer_piece(tok, bos));
        cJSON_AddStringToObject(j, "eos_token", tokenizer_piece(tok, eos));
        if (!bpe) cJSON_AddStringToObject(j, "unk_token", tokenizer_piece(tok, tokenizer_unk_id(tok)));
        rc = write_json(out, "special_tokens_map.json", j);
    }
    if (rc == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "bos_token_id", bos);
        struct token_buf eot = {0};
        if (llama3 && tokenizer_encode(tok, "<|eot_id|>", 10, &eot) == 0 && eot.n == 1 && eot.ids[0] != eos) {
            int ids[2] = {eos, eot.ids[0]};
            cJSON_AddItemToObject(j, "eos_token_id", cJSON_CreateIntArray(ids, 2));
        } else {
            cJSON_AddNumberToObject(j, "eos_token_id", eos);
        }
        free(eot.ids);
        cJSON_AddBoolToObject(j, "do_sample", 1);
        cJSON_AddNumberToObject(j, "temperature", 0.8);
        cJSON_AddNumberToObject(j, "top_p", 0.9);
        cJSON_AddNumberToObject(j, "max_length", c->max_seq_len);
        rc = write_json(out, "generation_config.json", j);
    }
    tokenizer_free(tok);
    return rc;
}

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *dtype = "bf16", *shard = NULL, *lora_mode = "merge", *v;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--ckpt", &v)) ckpt = v;
        else if (cli_opt(argc, argv, &i, "--out", &v)) out = v;
        else if (cli_opt(argc, argv, &i, "--dtype", &v)) dtype = v;
        else if (cli_opt(argc, argv, &i, "--max-shard-size", &v)) shard = v;
        else if (cli_opt(argc, argv, &i, "--lora", &v)) lora_mode = v;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: llamac export --ckpt PATH|RUN_DIR --out DIR [--dtype bf16|f16|f32 (bf16)]\n"
                   "                     [--max-shard-size SIZE (5GB; e.g. 200MB, 10MiB, bytes)]\n"
                   "                     [--lora merge|peft (merge): for a LoRA run, W + (alpha/r) B A, or PEFT's layout]\n");
            return 0;
        } else return err_set("unknown option '%s' (see llamac export --help)", argv[i]);
    }
    if (!ckpt || !out) return err_set("--ckpt and --out are required (see llamac export --help)");
    struct hf_save_opts o = {ST_BF16, 5000000000ULL, -1, -1};  // transformers' default limit, 5GB
    if (st_dtype_parse(&o.dtype, dtype) != 0) return err_set("--dtype %s: expected bf16, f16 or f32", dtype);
    if (strcmp(lora_mode, "merge") && strcmp(lora_mode, "peft"))
        return err_set("--lora %s: expected merge or peft", lora_mode);
    if (shard && !(o.max_shard_bytes = parse_size(shard)))
        return err_set("--max-shard-size %s: expected a size such as 5GB, 200MB, 10MiB or a number of bytes", shard);
    struct grid g;
    if (grid_init(&g, NULL, NULL, 1) != 0) {
        grid_finalize(&g);
        return -1;
    }
    struct llama m = {0};
    char *run_dir = NULL;
    struct ckpt_meta meta = {0};
    int rc = ckpt_open_model(&m, ckpt, &run_dir, &meta);
    if (rc == 0 && !m.lora && strcmp(lora_mode, "merge"))
        rc = err_set("--lora %s: %s holds no LoRA adapters (a full model: export it without --lora)", lora_mode, ckpt);
    if (rc == 0) rc = fs_mkdir_p(out);
    if (rc == 0) {
        char *tok_path = fs_join(run_dir, "tokenizer.model");
        rc = export_tokenizer(tok_path, out, &m.cfg, &o);
        free(tok_path);
    }
    free(run_dir);
    if (rc == 0 && m.lora) {  // adapters (model/lora.h)
        struct lora_config lc;
        char *init = NULL;
        rc = lora_ckpt_settings(&meta, ckpt, &lc, &init);
        if (rc == 0) rc = lora_export(&m, out, lora_mode, &o, strchr(init, ':') ? strchr(init, ':') + 1 : init);
        free(init);
        if (rc == 0)
            printf("LoRA adapters (rank %d) exported %s\n", lc.rank,
                   strcmp(lora_mode, "peft") ? "merged" : "in PEFT's layout");
    } else if (rc == 0) {
        rc = hf_save_opts(&m, out, &o);
    }
    ckpt_meta_free(&meta);
    if (rc == 0) printf("exported %s (%s) to %s\n", ckpt, dtype, out);
    if (m.be) llama_free(&m);
    grid_finalize(&g);
    return rc;
}
