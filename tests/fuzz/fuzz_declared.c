/*
 * libFuzzer target: the declared-projection loader (declared_load.c) on
 * arbitrary file contents. It must return a declaration that passes
 * registry_check, or NULL with one line "FILE:LINE: problem"; never crash
 * or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "declared.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/projectord-fuzz-%ld-declared.conf", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char err[1024] = "";
    struct declared *d = declared_load_file(path, err, sizeof err);
    unlink(path);
    if (d) {
        char check[512];
        if (registry_check(&d->proj, check, sizeof check) < 0)
            abort(); /* the loader hands out only what the start accepts */
        declared_free(d);
    } else if (strchr(err, '\n') || strncmp(err, path, strlen(path)) != 0) {
        abort(); /* the contract: one line naming the file */
    }
    return 0;
}
