// The C++ shim over SentencePiece (see tokenizer.h for the contract). Nothing else in llamac is C++.
//
// Besides calling the library, this file reads the model's serialized protobuf just enough to (1) know
// whether the model adds a dummy prefix, and (2) build a second processor with add_dummy_prefix = false,
// used for the valid-UTF-8 runs that follow a byte-encoded stretch in the middle of a text.
// A model file that is a tiktoken vocabulary or a tokenizer.json (Llama 3) is handed to the byte-level
// BPE of data/tokenizer_bpe.c instead; the interface is the same.
#include "data/tokenizer.h"
#include "data/tokenizer_bpe.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

extern "C" {
#include "core/error.h"
#include "core/fs.h"
#include "data/sha256.h"
}

namespace {

const char kSpace[] = "\xe2\x96\x81";  // U+2581, SentencePiece's whitespace mark

// ---------------------------------------------------------------------------------------------------
// Just enough protobuf to edit a ModelProto: fields 3 (normalizer_spec) and 4 (self_test_data).
// ---------------------------------------------------------------------------------------------------
bool pb_varint(const std::string &s, size_t *p, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *p < s.size(); shift += 7) {
        uint8_t b = (uint8_t)s[(*p)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

void pb_put_varint(std::string *s, uint64_t v) {
    while (v >= 0x80) { s->push_back((char)(v | 0x80)); v >>= 7; }
    s->push_back((char)v);
}

// Splits a message into (field number, whole encoded field including its key) pairs; false if malformed.
struct pb_field { uint32_t num; int wt; size_t begin, end, payload; uint64_t value; };
bool pb_fields(const std::string &s, std::vector<pb_field> *out) {
    size_t p = 0;
    while (p < s.size()) {
        pb_field f;
        f.begin = p;
        uint64_t key;
        if (!pb_varint(s, &p, &key)) return false;
        f.num = (uint32_t)(key >> 3);
        f.wt = (int)(key & 7);
        f.value = 0;
        switch (f.wt) {
        case 0: if (!pb_varint(s, &p, &f.value)) return false; f.payload = p; break;
        case 1: p += 8; f.payload = p - 8; break;
        case 5: p += 4; f.payload = p - 4; break;
        case 2: {
            uint64_t n;
            if (!pb_varint(s, &p, &n) || n > s.size() - p) return false;
            f.payload = p;
            f.value = n;
            p += n;
            break;
        }
        default: return false;
        }
        if (p > s.size()) return false;
        f.end = p;
        out->push_back(f);
    }
    return true;
}

// Reads normalizer_spec.add_dummy_prefix (default true) and builds a copy of the model with it set to
// false and without self-test samples (which would no longer match). False if the proto is malformed.
bool model_without_dummy_prefix(const std::string &model, bool *had_prefix, std::string *out) {
    std::vector<pb_field> top;
    if (!pb_fields(model, &top)) return false;
    *had_prefix = true;
    out->clear();
    bool seen_norm = false;
    for (const pb_field &f : top) {
        if (f.num == 4) continue;
        if (f.num != 3 || f.wt != 2) { out->append(model, f.begin, f.end - f.begin); continue; }
        std::string norm = model.substr(f.payload, f.value);
        std::vector<pb_field> nf;
        if (!pb_fields(norm, &nf)) return false;
        for (const pb_field &g : nf)
            if (g.num == 3 && g.wt == 0) *had_prefix = g.value != 0;
        norm.push_back((char)0x18);  // field 3 (add_dummy_prefix), varint: the last value wins
        norm.push_back((char)0x00);
        pb_put_varint(out, (3 << 3) | 2);
        pb_put_varint(out, norm.size());
        out->append(norm);
        seen_norm = true;
    }
    if (!seen_norm) {
        pb_put_varint(out, (3 << 3) | 2);
        pb_put_varint(out, 2);
        out->push_back((char)0x18);
        out->push_back((char)0x00);
    }
    return true;
}

// Length of the valid UTF-8 character at p (SentencePiece's definition: no overlongs, no surrogates,
// at most U+10FFFF), or 0 if the byte at p does not start one.
size_t utf8_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    auto trail = [&](size_t i) { return i < n && (p[i] & 0xc0) == 0x80; };
    if ((c & 0xe0) == 0xc0) {
        if (!trail(1)) return 0;
        unsigned cp = (c & 0x1f) << 6 | (p[1] & 0x3f);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xf0) == 0xe0) {
        if (!trail(1) || !trail(2)) return 0;
        unsigned cp = (c & 0x0f) << 12 | (p[1] & 0x3f) << 6 | (p[2] & 0x3f);
        return cp >= 0x800 && (cp < 0xd800 || cp >= 0xe000) ? 3 : 0;
    }
    if ((c & 0xf8) == 0xf0) {
        if (!trail(1) || !trail(2) || !trail(3)) return 0;
        unsigned cp = (c & 0x07) << 18 | (p[1] & 0x3f) << 12 | (p[2] & 0x3f) << 6 | (p[3] & 0x3f);
        return cp >= 0x10000 && cp <= 0x10ffff ? 4 : 0;
    }
    return 0;
}

// Bytes that SentencePiece would not give back: invalid UTF-8 and U+2581. Returns how many such bytes
// start at p (0 when p starts a character SentencePiece handles).
size_t raw_run(const unsigned char *p, size_t n) {
    size_t k = utf8_len(p, n);
    if (k == 0) return 1;
    if (k == 3 && p[0] == 0xe2 && p[1] == 0x96 && p[2] == 0x81) return 3;
    return 0;
}

}  // namespace

struct tokenizer {
    struct bpe *bpe = nullptr;                        // a byte-level BPE model (tokenizer_bpe.h) instead
    ~tokenizer() { bpe_free(bpe); }
    sentencepiece::SentencePieceProcessor sp;         // as the model says
    sentencepiece::SentencePieceProcessor sp_inner;   // the same without the dummy prefix
    bool dummy_prefix = true;
    int vocab = 0, bos = -1, eos = -1, unk = 0;
    int byte_id[256];
    std::vector<std::string> surface;  // what each id decodes to ("▁" as " ", byte pieces as the byte)
    std::vector<uint8_t> kind;         // 0 normal, 1 byte, 2 control/unused (nothing)
    std::string path, sha;
};

extern "C" void token_buf_push(struct token_buf *b, int id) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->ids = (int *)xrealloc(b->ids, b->cap * sizeof(int));
    }
    b->ids[b->n++] = id;
}

static int read_file(const char *path, std::string *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set("%s: cannot open tokenizer model: %s", path, strerror(errno));
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return err_set("%s: read error", path);
    return 0;
}

static int tokenizer_init(tokenizer *t, const char *path) {
    std::string model;
    if (read_file(path, &model) != 0) return -1;
    if (model.empty()) return err_set("%s: empty tokenizer model file", path);
    t->path = path;
    char hex[65];
    sha256_hex(hex, model.data(), model.size());
    t->sha = hex;
    if (bpe_sniff(model.data(), model.size())) {  // Llama 3: tiktoken vocabulary or tokenizer.json
        if (bpe_load(&t->bpe, path, model.data(), model.size()) != 0) return -1;
        t->vocab = bpe_vocab_size(t->bpe);
        t->bos = bpe_token_id(t->bpe, "<|begin_of_text|>");
        t->eos = bpe_token_id(t->bpe, "<|end_of_text|>");
        t->unk = -1;  // byte-level: every byte has a token
        return 0;
    }
    auto st = t->sp.LoadFromSerializedProto(model);
    if (!st.ok()) return err_set("%s: not a SentencePiece model (%s)", path, st.ToString().c_str());
    std::string inner;
    if (!model_without_dummy_prefix(model, &t->dummy_prefix, &inner))
        return err_set("%s: malformed SentencePiece model", path);
    if (t->dummy_prefix) {
        st = t->sp_inner.LoadFromSerializedProto(inner);
        if (!st.ok()) return err_set("%s: cannot load the model without dummy prefix (%s)", path, st.ToString().c_str());
    }
    t->vocab = t->sp.GetPieceSize();
    t->bos = t->sp.bos_id();
    t->eos = t->sp.eos_id();
    t->unk = t->sp.unk_id();
    for (int b = 0; b < 256; b++) t->byte_id[b] = t->unk;
    t->surface.resize(t->vocab);
    t->kind.resize(t->vocab);
    for (int id = 0; id < t->vocab; id++) {
        const std::string &piece = t->sp.IdToPiece(id);
        if (t->sp.IsByte(id)) {
            unsigned v = 0;
            if (sscanf(piece.c_str(), "<0x%2X>", &v) == 1 && v < 256) {
                t->byte_id[v] = id;
                t->surface[id] = std::string(1, (char)v);
            }
            t->kind[id] = 1;
        } else if (t->sp.IsControl(id) || t->sp.IsUnused(id)) {
            t->kind[id] = 2;
        } else if (t->sp.IsUnknown(id)) {
            t->surface[id] = " \xe2\x81\x87 ";  // SentencePiece's unk surface " ⁇ "
        } else {
            std::string s;
            for (size_t i = 0; i < piece.size();) {
                if (piece.compare(i, 3, kSpace) == 0) { s.push_back(' '); i += 3; }
                else s.push_back(piece[i++]);
            }
            t->surface[id] = s;
        }
    }
    return 0;
}

extern "C" int tokenizer_load(struct tokenizer **out, const char *path) {
    *out = nullptr;
    try {
        auto t = std::make_unique<tokenizer>();
        if (tokenizer_init(t.get(), path) != 0) return -1;
        *out = t.release();
        return 0;
    } catch (const std::exception &e) {
        return err_set("%s: cannot load tokenizer: %s", path, e.what());
    }
}

extern "C" void tokenizer_free(struct tokenizer *t) { delete t; }
extern "C" int tokenizer_vocab_size(const struct tokenizer *t) { return t->vocab; }
extern "C" int tokenizer_bos_id(const struct tokenizer *t) { return t->bos; }
extern "C" int tokenizer_eos_id(const struct tokenizer *t) { return t->eos; }
extern "C" int tokenizer_unk_id(const struct tokenizer *t) { return t->unk; }
extern "C" const char *tokenizer_sha256(const struct tokenizer *t) { return t->sha.c_str(); }
extern "C" const char *tokenizer_path(const struct tokenizer *t) { return t->path.c_str(); }
extern "C" const char *tokenizer_piece(const struct tokenizer *t, int id) {
    if (t->bpe) return bpe_piece(t->bpe, id);
    return id >= 0 && id < t->vocab ? t->sp.IdToPiece(id).c_str() : "";
}

static int encode_run(const tokenizer *t, const sentencepiece::SentencePieceProcessor &sp, const char *s, size_t n,
                      std::vector<int> *ids, struct token_buf *out) {
    auto st = sp.Encode(absl::string_view(s, n), ids);
    if (!st.ok()) return err_set("tokenizer %s: encode failed: %s", t->path.c_str(), st.ToString().c_str());
    for (int id : *ids) token_buf_push(out, id);
    return 0;
}

extern "C" int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, struct token_buf *out) {
    if (t->bpe) return bpe_encode(t->bpe, text, len, out);
    try {
        const unsigned char *u = (const unsigned char *)text;
        const auto &inner = t->dummy_prefix ? t->sp_inner : t->sp;
        std::vector<int> ids;
        size_t run = 0;     // start of the current stretch that SentencePiece encodes
        bool first = true;  // that stretch starts the text (and so gets the dummy prefix)
        for (size_t i = 0; i < len;) {
            size_t raw = raw_run(u + i, len - i);
            if (raw == 0) {
                i += utf8_len(u + i, len - i);
                continue;
            }
            if (i > run && encode_run(t, first ? t->sp : inner, text + run, i - run, &ids, out) != 0) return -1;
            first = false;
            for (size_t k = 0; k < raw; k++) token_buf_push(out, t->byte_id[u[i + k]]);
            i += raw;
            run = i;
        }
        if (run < len && encode_run(t, first ? t->sp : inner, text + run, len - run, &ids, out) != 0) return -1;
        return 0;
    } catch (const std::exception &e) {
        return err_set("tokenizer %s: encode failed: %s", t->path.c_str(), e.what());
    }
}

extern "C" char *tokenizer_decode(const struct tokenizer *t, const int *ids, size_t n, size_t *len) {
    if (t->bpe) return bpe_decode(t->bpe, ids, n, len);
    std::string s;
    bool at_start = true;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->vocab) {
            err_set("token id %d is outside the vocabulary (size %d)", id, t->vocab);
            return nullptr;
        }
        if (t->kind[id] == 2) continue;
        const std::string &piece = t->surface[id];
        if (at_start && t->kind[id] == 0 && t->dummy_prefix && !piece.empty() && piece[0] == ' ' &&
            t->sp.IdToPiece(id).compare(0, 3, kSpace) == 0)
            s.append(piece, 1, std::string::npos);
        else
            s.append(piece);
        at_start = false;
    }
    char *r = (char *)xmalloc(s.size() + 1);
    memcpy(r, s.data(), s.size());
    r[s.size()] = '\0';
    if (len) *len = s.size();
    return r;
}

// ---------------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------------
namespace {
class VectorIterator : public sentencepiece::SentenceIterator {
  public:
    explicit VectorIterator(const std::vector<std::string> *v) : v_(v) {}
    bool done() const override { return i_ >= v_->size(); }
    void Next() override { i_++; }
    const std::string &value() const override { return (*v_)[i_]; }
    sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

  private:
    const std::vector<std::string> *v_;
    size_t i_ = 0;
};
}  // namespace

extern "C" int tokenizer_train(const char *model_path, const struct tokenizer_train_opts *o,
                               const char *const *sentences, const size_t *lens, size_t n) {
    try {
        const size_t max_len = 4096;
        std::vector<std::string> v;
        for (size_t i = 0; i < n; i++) {
            const unsigned char *u = (const unsigned char *)sentences[i];
            size_t at = 0;
            while (at < lens[i]) {
                size_t end = at + max_len < lens[i] ? at + max_len : lens[i];
                while (end < lens[i] && end > at && (u[end] & 0xc0) == 0x80) end--;  // character boundary
                if (end == at) end = at + max_len < lens[i] ? at + max_len : lens[i];
                v.emplace_back(sentences[i] + at, end - at);
                at = end;
            }
        }
        if (v.empty()) return err_set("%s: no text to train the tokenizer on", model_path);
        char cov[32];
        snprintf(cov, sizeof(cov), "%.6f", o->character_coverage > 0 ? o->character_coverage : 0.99995);
        std::unordered_map<std::string, std::string> kw = {
            {"model_type", "bpe"},
            {"vocab_size", std::to_string(o->vocab_size)},
            {"split_digits", "true"},
            {"byte_fallback", "true"},
            {"normalization_rule_name", "identity"},
            {"remove_extra_whitespaces", "false"},
            {"add_dummy_prefix", "true"},
            {"allow_whitespace_only_pieces", "true"},
            {"character_coverage", cov},
            {"max_sentencepiece_length", "16"},
            {"max_sentence_length", "4192"},
            {"unk_id", "0"}, {"bos_id", "1"}, {"eos_id", "2"}, {"pad_id", "-1"},
            {"input_sentence_size", "0"},        // use every sentence given: prep samples them itself
            {"shuffle_input_sentence", "false"},
            {"num_threads", "1"},                // recorded in the model: fixed so bytes do not depend on the machine
            {"minloglevel", "2"},
        };
        VectorIterator it(&v);
        std::string proto;
        auto st = sentencepiece::SentencePieceTrainer::Train(kw, &it, &proto);
        if (!st.ok()) {  // "Internal: ./src/x.cc(660) [(cond)] Vocabulary size too high..." -> the sentence
            std::string msg = st.message() ? st.message() : "unknown error";
            size_t at = msg.find(")] ");
            if (at != std::string::npos) msg = msg.substr(at + 3);
            return err_set("tokenizer training failed: %s", msg.c_str());
        }
        return fs_write_atomic(model_path, proto.data(), proto.size());  // the whole file or none (core/fs.h)
    } catch (const std::exception &e) {
        return err_set("%s: tokenizer training failed: %s", model_path, e.what());
    }
}
