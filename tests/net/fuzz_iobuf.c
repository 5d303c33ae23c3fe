/*
 * fuzz_iobuf.c - libFuzzer target for IOBuf.
 *
 * The fuzzer's input is the sequence of choices of the model test in
 * test_iobuf.c (operation, buffers, sizes, offsets, data seeds): it is
 * included here with only its model part, so both drive IOBufs through the
 * same code and compare them with plain byte arrays after every step.
 */
#define WT_IOBUF_MODEL_ONLY
#include "test_iobuf.c"

typedef struct {
    const uint8_t *p;
    size_t n;
} fuzz_src_t;

/* Two input bytes per choice; zeros once the input is used up. */
static uint32_t fuzz_next(void *arg)
{
    fuzz_src_t *s = arg;
    uint32_t v = 0;
    for (int k = 0; k < 2 && s->n > 0; k++, s->p++, s->n--)
        v = v << 8 | *s->p;
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_src_t src = {data, size};
    model_t m;
    model_init(&m, fuzz_next, &src);
    while (src.n > 0)
        model_step(&m);
    model_fini(&m);
    return 0;
}
