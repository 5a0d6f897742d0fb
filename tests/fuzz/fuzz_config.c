/*
 * libFuzzer target: the configuration loader on arbitrary file contents.
 * It must return 0 or -1 with one line of error, never crash or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    static const char *names[16];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/projectord-fuzz-%ld.conf", (long)getpid());
        for (size_t i = 0; i < projection_registry_count && i < 16; i++)
            names[i] = projection_registry[i]->name;
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct config cfg;
    char err[1024];
    int rc = config_load_path(&cfg, path, true, names, projection_registry_count, err, sizeof err);
    unlink(path); /* no file left in /tmp when the run ends (the input is in libFuzzer's hands) */
    if (rc == 0)
        config_free(&cfg);
    else if (strchr(err, '\n'))
        abort(); /* the contract: one line */
    return 0;
}
