#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

// Matches "--name value" or "--name=value" at argv[*i]; advances *i past the value.
int cli_opt(int argc, char **argv, int *i, const char *name, const char **value) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0' || *i + 1 >= argc) return 0;
    *value = argv[++*i];
    return 1;
}

int cli_is_rank0(void) {
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    if (!r) r = getenv("PMIX_RANK");
    return !r || atoi(r) == 0;
}
