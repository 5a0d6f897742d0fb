/*
 * libFuzzer target: pg_snapshot text parsing and the window arithmetic on
 * whatever parses. A parsed snapshot must satisfy its own invariants.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tailwin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct snapshot s;
    if (snapshot_parse(text, &s) == 0) {
        if (s.xmin > s.xmax)
            abort();
        for (size_t i = 0; i < s.nxip; i++)
            if (s.xip[i] < s.xmin || s.xip[i] >= s.xmax || snapshot_visible(&s, s.xip[i]) ||
                (i > 0 && s.xip[i] <= s.xip[i - 1]))
                abort();
        struct tailwin_params p;
        if (tailwin_params(&s, &p) == 0)
            tailwin_params_free(&p);
        snapshot_free(&s);
    }
    free(text);
    return 0;
}
