// The demo corpus: real multilingual text from Debian's fortune packages, one file per language with
// documents separated by "%" lines (prep's "fortune" format). Nine of LLaMA's languages, Latin and
// Cyrillic scripts: en, de, ru, bg, es, it, pl, cs, pt (fortunes-br). About 15 MB of UTF-8 text.
//
// Files are found through dpkg's lists of each package's files, so that a language gets exactly its own
// package's texts (the Italian package puts links at the top level, the Czech one carries Slovak files);
// the .dat indexes, the .u8 links and the offensive "off/" collections are skipped. Missing packages are
// installed with apt-get when running as root and allowed to; otherwise their languages are left out.
#pragma once
#include <stdint.h>

#define DEMO_MAX_LANGS 9

struct demo_lang {
    char lang[8];        // file name and source name: DIR/LANG.txt
    char name[32];       // "English"
    char package[32];
    int files;
    uint64_t docs, bytes;
};

// Writes DIR/LANG.txt for every available language; fills langs (DEMO_MAX_LANGS entries) and *n.
int democorpus_build(const char *dir, int allow_install, struct demo_lang *langs, int *n);
